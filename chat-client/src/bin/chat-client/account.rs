//! Logging in from the terminal: where the password comes from, and the
//! token kept for next time.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use chat_client::{Login, Secret};

/// Where the password comes from, first match wins: the `CHAT_PASSWORD`
/// environment variable, `--password-file`, or a prompt on the terminal
/// (not echoed).
pub(crate) fn password(file: Option<&Path>) -> Result<Secret, String> {
    if let Ok(password) = std::env::var("CHAT_PASSWORD") {
        return Ok(password.into());
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the password from {}: {e}", file.display()))?;
        // The first line, as an editor would save it.
        let line = text.lines().next().unwrap_or_default();
        return Ok(line.to_owned().into());
    }
    if !io::stdin().is_terminal() {
        return Err("no password: set CHAT_PASSWORD or give --password-file \
                    (standard input is not a terminal to ask on)"
            .into());
    }
    prompt("password: ")
}

/// Reads a line from the terminal with echo off.
fn prompt(label: &str) -> Result<Secret, String> {
    let mut err = io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    crossterm::terminal::enable_raw_mode().map_err(|e| format!("cannot read a password: {e}"))?;
    let read = read_hidden();
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = writeln!(err);
    read
}

/// Keys until Enter, in raw mode: nothing is shown.
fn read_hidden() -> Result<Secret, String> {
    use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers, read};
    let mut line = String::new();
    loop {
        let event = read().map_err(|e| format!("cannot read a password: {e}"))?;
        let Event::Key(key) = event else { continue };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        match key.code {
            KeyCode::Enter => return Ok(line.into()),
            KeyCode::Backspace => {
                line.pop();
            }
            KeyCode::Char('c' | 'd') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Err("no password given".into());
            }
            KeyCode::Char(c) => line.push(c),
            _ => {}
        }
    }
}

/// The token saved in `file`, if there is one.
pub(crate) fn saved_token(file: &Path) -> Result<Option<Secret>, String> {
    match std::fs::File::open(file) {
        Ok(f) => {
            let mut line = String::new();
            io::BufReader::new(f)
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the token in {}: {e}", file.display()))?;
            let token = line.trim();
            Ok((!token.is_empty()).then(|| token.to_owned().into()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read the token in {}: {e}", file.display())),
    }
}

/// Saves `token` in `file`, readable by its owner only.
pub(crate) fn save_token(file: &Path, token: &Secret) -> Result<(), String> {
    let write = || -> io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(file)?;
        writeln!(f, "{}", token.expose())
    };
    write().map_err(|e| format!("cannot save the token in {}: {e}", file.display()))
}

/// How to log in, from the flags: `--register` or `--login` (with `--name`
/// and a password), else a token saved in `--token-file`, else none (a
/// guest).
pub(crate) fn login(
    register: bool,
    login: bool,
    name: Option<&str>,
    password_file: Option<&PathBuf>,
    token_file: Option<&PathBuf>,
) -> Result<Option<Login>, String> {
    if register || login {
        let Some(name) = name else {
            return Err("--register and --login need --name NAME".into());
        };
        let password = password(password_file.map(PathBuf::as_path))?;
        let name = name.to_owned();
        return Ok(Some(if register {
            Login::Register { name, password }
        } else {
            Login::Password { name, password }
        }));
    }
    match token_file {
        Some(file) => Ok(saved_token(file)?.map(Login::Token)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_round_trips_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("chat-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        let _ = std::fs::remove_file(&file);
        assert_eq!(saved_token(&file).unwrap(), None);
        save_token(&file, &"abc.def".into()).unwrap();
        assert_eq!(saved_token(&file).unwrap(), Some("abc.def".into()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn register_and_login_need_a_name() {
        let err = login(true, false, None, None, None).unwrap_err();
        assert!(err.contains("--name"), "{err}");
        assert_eq!(login(false, false, None, None, None).unwrap(), None);
    }
}
