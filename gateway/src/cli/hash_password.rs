//! `edge-gateway hash-password`: an argon2id PHC string of a device password for
//! `[devices.auth]`. The password never comes from the command line (it would stay in the
//! shell history and show in `ps`): a prompt without echo, asked twice, or stdin.

use std::process::ExitCode;

/// Prints the hash; exit 1 (with the reason) for an empty or mistyped password.
pub fn run() -> ExitCode {
    match read_password().and_then(|pw| crate::devices::auth::hash_password(&pw)) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("edge-gateway hash-password: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The password to hash: prompted twice without echo on a terminal, else the first line of
/// stdin (without its line end).
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("device password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read stdin: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password)
}
