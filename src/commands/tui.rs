//! `cdlake tui`: the terminal UI over a running `cdlake serve` or `standalone`.

use std::process::ExitCode;

/// Where the query service is.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The HTTP address of `cdlake serve` or `cdlake standalone`.
    #[arg(long, env = "CDLAKE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The API token, sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "CDLAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    cdlake_tui::run(cdlake_tui::Connection::new(&args.url, args.token)).await?;
    Ok(ExitCode::SUCCESS)
}
