use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = sshq_cli::cli::Cli::parse();
    let code = sshq_cli::cli::run(cli).await;
    std::process::exit(code);
}
