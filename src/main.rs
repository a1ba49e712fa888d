use clap::Parser;

// The request path allocates many small short-lived buffers; mimalloc's
// thread-local free lists cost less than glibc malloc's (bench/load.py).
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
