//! The `mri-ad` binary: parse the command line, run the subcommand, print the error chain and exit.
//!
//! Exit codes: 0 success; 2 bad input or bad arguments (the message names the file or the flag);
//! 1 a failure that is not the user's input (I/O error of the machine, internal error).

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = mri_ad::cli::Cli::from_command_line();
    match mri_ad::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mri-ad: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
