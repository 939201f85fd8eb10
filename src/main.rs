//! The `holdfast` command: `run` the B2BUA on a config file, `check` a config file, or
//! `drill` (game day: prove calls survive failures).
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "SIP B2BUA that keeps voice-AI calls up through carrier and provider failures"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run holdfast. SIGHUP reloads the config file; SIGTERM drains (503 to new calls, exit
    /// when the last call ends); SIGINT exits at once.
    Run {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// After SIGTERM, how long to wait for calls to end, in seconds.
        #[arg(long, default_value_t = 300)]
        drain_timeout: u64,
    },
    /// Validate a configuration file and print the resolved routing table. Exits 1 with
    /// file:line:column and the field on error.
    Check {
        /// The YAML configuration file.
        file: PathBuf,
    },
    /// Game day in one command: start holdfast with its own carriers and AI providers on
    /// loopback, place synthetic calls with audio both ways, SIGKILL one layer, and report
    /// which calls survived, the re-route gaps and a Markdown postmortem. Exits 1 if any
    /// call dropped. With --admin, drills a running holdfast through its admin API.
    Drill(Box<holdfast::drill::DrillArgs>),
    /// One endpoint of a drill (a SIP agent or a WebSocket bot), run by `drill`.
    #[command(hide = true)]
    Peer(holdfast::drill::PeerArgs),
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
        // tungstenite traces whole handshake requests, Authorization (API keys) included:
        // never below debug, whatever the filter says.
        .add_directive(
            "tungstenite::handshake::client=debug"
                .parse()
                .expect("a valid directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Drill(args) => holdfast::drill::drill_main(*args),
        Command::Peer(args) => holdfast::drill::peer_main(args),
        Command::Check { file } => match holdfast::config::load(&file) {
            Ok(config) => {
                print!("{}", holdfast::routing::check::render_check(&config));
                print!("{}", holdfast::runtime::limits::capacity_report(&config));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            drain_timeout,
        } => {
            init_logs(cli.log_format, &cli.log_level);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = holdfast::runtime::RunOptions {
                config_path: config,
                drain_timeout: Duration::from_secs(drain_timeout),
            };
            match rt.block_on(holdfast::runtime::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
