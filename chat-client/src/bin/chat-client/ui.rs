//! Where input lines come from and where output lines go.
//!
//! In a pipe, a thread reads standard input plainly and output is written
//! line by line. On a terminal, reedline edits the input line and incoming
//! lines are printed above it through its external printer, so what is being
//! typed is never garbled.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use tokio::sync::mpsc;

use crate::command::{Input, parse};

/// Longest input line read; longer ones are reported and skipped. Far above
/// any server's limit, so the library still reports the exact numbers.
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// Where output goes. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// Straight to stdout (and stderr for errors).
    Plain,
    /// Through the line editor's printer thread.
    Editor(mpsc::Sender<String>),
}

impl Out {
    /// Prints one line (or several, joined by newlines).
    pub(crate) async fn line(&self, text: impl Into<String>) {
        let text = text.into();
        match self {
            Out::Plain => plain(&text),
            Out::Editor(tx) => {
                if let Err(mpsc::error::SendError(text)) = tx.send(text).await {
                    plain(&text);
                }
            }
        }
    }

    /// Prints an error line: to stderr in a pipe, above the prompt on a terminal.
    pub(crate) async fn error(&self, text: impl Into<String>) {
        match self {
            Out::Plain => eprintln!("{}", text.into()),
            Out::Editor(_) => self.line(text).await,
        }
    }
}

fn plain(text: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout (`| head -1`) is not worth dying for: keep chatting.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// The threads behind a [`Out::Editor`], to be wound down at the end.
#[derive(Debug)]
pub(crate) struct Editor {
    printer: JoinHandle<()>,
    input: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Editor {
    /// Prints everything still queued, then stops the line editor (which
    /// restores the terminal). Every [`Out`] clone must be dropped first.
    pub(crate) fn finish(self) {
        let _ = self.printer.join();
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.input.join();
    }
}

/// Reads standard input plainly, one line at a time, on its own thread (a
/// blocking read cannot be cancelled; the process simply exits around it).
pub(crate) fn pipe(inputs: mpsc::Sender<Input>) {
    thread::spawn(move || {
        let stdin = io::stdin();
        let mut stdin = stdin.lock();
        let mut number = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = (&mut stdin).take(MAX_LINE).read_until(b'\n', &mut buf);
            let input = match read {
                Ok(0) => Input::Leave,
                Ok(_) => {
                    number += 1;
                    if !buf.ends_with(b"\n") && buf.len() as u64 == MAX_LINE {
                        skip_line(&mut stdin);
                        Input::Invalid(format!(
                            "line {number} is longer than {MAX_LINE} bytes; not sent"
                        ))
                    } else {
                        trim_newline(&mut buf);
                        match std::str::from_utf8(&buf) {
                            Ok(line) => parse(line),
                            Err(_) => Input::Invalid(format!(
                                "line {number} is not valid UTF-8; not sent"
                            )),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = inputs.blocking_send(Input::Invalid(format!("cannot read input: {e}")));
                    Input::Leave
                }
            };
            let leave = input == Input::Leave;
            if inputs.blocking_send(input).is_err() || leave {
                return;
            }
        }
    });
}

fn skip_line(r: &mut impl BufRead) {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match r.take(MAX_LINE).read_until(b'\n', &mut sink) {
            Ok(0) => return,
            Ok(_) if sink.ends_with(b"\n") => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn trim_newline(buf: &mut Vec<u8>) {
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
}

/// Starts the line editor on the terminal.
pub(crate) fn terminal(inputs: mpsc::Sender<Input>) -> (Out, Editor) {
    use reedline::{ExternalPrinter, Reedline, Signal};

    // Capacity 0: a hand-over completes only when the editor has taken the
    // lines, and it prints what it takes before it looks at `stop`. So
    // nothing queued is lost when the editor stops.
    let printer = ExternalPrinter::<String>::new(0);
    let to_editor = printer.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let mut editor = Reedline::create()
        .with_external_printer(printer)
        .with_break_signal(Arc::clone(&stop));

    let (lines_tx, mut lines_rx) = mpsc::channel::<String>(256);
    let printer = thread::spawn(move || {
        while let Some(first) = lines_rx.blocking_recv() {
            // Whatever piled up while the editor was busy goes in one batch.
            let mut batch = first;
            while let Ok(more) = lines_rx.try_recv() {
                batch.push('\n');
                batch.push_str(&more);
            }
            if let Err(lost) = to_editor.send(batch) {
                // The editor is gone (its thread ended): print plainly.
                plain(&lost.0);
            }
        }
    });

    let input = thread::spawn(move || {
        let prompt = Prompt;
        loop {
            let input = match editor.read_line(&prompt) {
                Ok(Signal::Success(line)) => parse(&line),
                Ok(Signal::CtrlD | Signal::CtrlC) => Input::Leave,
                Ok(Signal::ExternalBreak(_)) => {
                    // Leave the cursor on a fresh line for the shell.
                    println!();
                    return;
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = inputs.blocking_send(Input::Invalid(format!("terminal error: {e}")));
                    Input::Leave
                }
            };
            let leave = input == Input::Leave;
            if inputs.blocking_send(input).is_err() || leave {
                // Dropping the editor makes the printer thread print plainly
                // from now on; the terminal is back in its normal mode.
                return;
            }
        }
    });

    (
        Out::Editor(lines_tx),
        Editor {
            printer,
            input,
            stop,
        },
    )
}

/// A plain `> ` prompt.
struct Prompt;

impl reedline::Prompt for Prompt {
    fn render_prompt_left(&self) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_right(&self) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_indicator(
        &self,
        _mode: reedline::PromptEditMode,
    ) -> std::borrow::Cow<'_, str> {
        "> ".into()
    }

    fn render_prompt_multiline_indicator(&self) -> std::borrow::Cow<'_, str> {
        "… ".into()
    }

    fn render_prompt_history_search_indicator(
        &self,
        _search: reedline::PromptHistorySearch,
    ) -> std::borrow::Cow<'_, str> {
        "(search) ".into()
    }
}
