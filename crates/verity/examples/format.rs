//! Minimal `format DATA HASH [SALT_HEX]` for profiling the library without the whole CLI.
use std::process::ExitCode;

use keelson_verity::{SaltSpec, VerityParams, format};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: format DATA HASH [SALT_HEX]");
        return ExitCode::FAILURE;
    }
    let mut params = VerityParams::default();
    if let Some(s) = args.get(3) {
        match SaltSpec::parse_hex(s) {
            Ok(salt) => params.salt = salt,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match format(args[1].as_ref(), args[2].as_ref(), &params) {
        Ok(info) => {
            println!("Root hash: {}", info.root_hash_hex());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
