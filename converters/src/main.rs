use clap::Parser;

fn main() {
    let cli = mote_converters::cli::Cli::parse();
    if let Err(e) = mote_converters::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
