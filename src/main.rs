use clap::Parser;

// The request path allocates many small short-lived buffers; mimalloc's
// thread-local free lists cost less than glibc malloc's (bench/load.py).
// Built without transparent huge pages (feature `no_thp`): mimalloc's madvise
// for them made 2 MiB pages of a small heap, 30 MiB RSS under load instead of 16.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = pusher_dual_auth::cli::Cli::parse();
    match pusher_dual_auth::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
