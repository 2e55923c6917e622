//! Scratch driver (temporary).
#[path = "../src/bench_stream.rs"]
mod bench_stream;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: bench_stream::StreamArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench_stream::run(Cli::parse().args).await
}
