use clap::Parser;

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
