//! Where input lines come from and where output lines go.
//!
//! In a pipe, a thread reads standard input plainly and output is written
//! line by line. On a terminal, reedline edits the input line and incoming
//! lines are printed above it through its external printer, so what is being
//! typed is never garbled.
//!
//! Pasting a long line: crossterm (under reedline) reads the terminal 1,024
//! bytes at a time and returns as soon as those bytes make an event, while
//! waiting for more input with an edge-triggered epoll. What a paste left in
//! the kernel's buffer beyond the first 1,024 bytes does not wake it up
//! again, so it stayed there, Enter included, until the next key press
//! (crossterm-rs/crossterm pull request 1057). Bracketed paste mode (on
//! here) has the terminal mark a paste's start and end; crossterm then keeps
//! reading until the end mark and hands over the whole paste as one event.

use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use tokio::sync::mpsc;

use crate::command::{Input, parse};
use crate::render::{Line, Painter};

/// Longest input line read; longer ones are reported and skipped. Far above
/// any server's limit, so the library still reports the exact numbers.
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// Where output goes, and how lines look. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    sink: Sink,
    painter: Painter,
}

#[derive(Debug, Clone)]
enum Sink {
    /// Straight to stdout (and stderr for errors).
    Plain,
    /// Through the line editor's printer thread.
    Editor(mpsc::Sender<String>),
}

impl Out {
    /// Prints one line with the time, coloured if the painter says so.
    pub(crate) async fn line(&self, line: &Line) {
        self.text(self.painter.paint(line)).await;
    }

    /// Prints text as it is (several lines, joined by newlines, at most).
    pub(crate) async fn text(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.sink {
            Sink::Plain => plain(&text),
            Sink::Editor(tx) => {
                if let Err(mpsc::error::SendError(text)) = tx.send(text).await {
                    plain(&text);
                }
            }
        }
    }

    /// Prints a mistake of ours: plainly to stderr in a pipe, as an error
    /// line above the prompt on a terminal.
    pub(crate) async fn error(&self, text: impl Into<String>) {
        match &self.sink {
            Sink::Plain => eprintln!("{}", text.into()),
            Sink::Editor(_) => self.line(&Line::error(text)).await,
        }
    }
}

/// The prompt's text (`#lobby> `), shared with the line editor, which shows
/// the new text the next time it draws the prompt.
#[derive(Debug, Clone, Default)]
pub(crate) struct PromptText(Arc<Mutex<String>>);

impl PromptText {
    pub(crate) fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    pub(crate) fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn plain(text: &str) {
    let mut out = io::stdout().lock();
    // A closed stdout (`| head -1`) is not worth dying for: keep chatting.
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// The threads behind the line editor, to be wound down at the end.
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
pub(crate) fn pipe(inputs: mpsc::Sender<Input>, painter: Painter) -> Out {
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
    Out {
        sink: Sink::Plain,
        painter,
    }
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
pub(crate) fn terminal(
    inputs: mpsc::Sender<Input>,
    painter: Painter,
    prompt: PromptText,
) -> (Out, Editor) {
    use reedline::{ExternalPrinter, Reedline, Signal};

    // Capacity 0: a hand-over completes only when the editor has taken the
    // lines, and it prints what it takes before it looks at `stop`. So
    // nothing queued is lost when the editor stops.
    let printer = ExternalPrinter::<String>::new(0);
    let to_editor = printer.sender();
    let stop = Arc::new(AtomicBool::new(false));
    let mut editor = Reedline::create()
        .use_bracketed_paste(true)
        // The prompt is coloured too, unless NO_COLOR says otherwise.
        .with_ansi_colors(painter.colour)
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
        let prompt = Prompt(prompt);
        loop {
            let inputs_now = match editor.read_line(&prompt) {
                // A paste may hold several lines: each is one input, as in a pipe.
                Ok(Signal::Success(buffer)) => {
                    let parsed: Vec<Input> = buffer.lines().map(parse).collect();
                    if parsed.iter().any(echoed) {
                        // Its own line (`#lobby <me> TEXT`) will show it.
                        erase(&prompt.0.get(), &buffer);
                    }
                    parsed
                }
                Ok(Signal::CtrlD | Signal::CtrlC) => vec![Input::Leave],
                Ok(Signal::ExternalBreak(_)) => {
                    // Leave the cursor on a fresh line for the shell.
                    println!();
                    return;
                }
                Ok(_) => continue,
                Err(e) => vec![Input::Invalid(format!("terminal error: {e}")), Input::Leave],
            };
            for input in inputs_now {
                let leave = input == Input::Leave;
                if inputs.blocking_send(input).is_err() || leave {
                    // Dropping the editor makes the printer thread print plainly
                    // from now on; the terminal is back in its normal mode.
                    return;
                }
            }
        }
    });

    (
        Out {
            sink: Sink::Editor(lines_tx),
            painter,
        },
        Editor {
            printer,
            input,
            stop,
        },
    )
}

/// Whether the chat prints `input` as one of our own lines once sent.
fn echoed(input: &Input) -> bool {
    matches!(input, Input::Say(_) | Input::Msg { .. })
}

/// Takes the line just submitted (prompt and text) off the screen: the
/// cursor is on the row below it. Rows are counted as the terminal wraps
/// them, never more, so nothing printed before is erased: at worst (wide
/// characters wrapped early, a line taller than the screen) part of it
/// stays.
fn erase(prompt: &str, buffer: &str) {
    use unicode_width::UnicodeWidthStr;

    // A terminal that does not know its width: leave the line be.
    let columns = match crossterm::terminal::size() {
        Ok((columns, _)) if columns > 0 => usize::from(columns),
        _ => return,
    };
    let mut rows = 0;
    for (i, line) in buffer.split('\n').enumerate() {
        let lead = if i == 0 { prompt.width() } else { MORE.width() };
        rows += (lead + line.width()).div_ceil(columns).max(1);
    }
    let mut out = io::stdout().lock();
    // Up, to the first column, and clear to the end of the screen.
    let _ = write!(out, "\x1b[{rows}A\r\x1b[J").and_then(|()| out.flush());
}

/// What starts each further line of a multi-line input.
const MORE: &str = "… ";

/// The prompt: where a plain line goes (`#lobby> `).
struct Prompt(PromptText);

impl reedline::Prompt for Prompt {
    fn render_prompt_left(&self) -> std::borrow::Cow<'_, str> {
        self.0.get().into()
    }

    fn render_prompt_right(&self) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_indicator(
        &self,
        _mode: reedline::PromptEditMode,
    ) -> std::borrow::Cow<'_, str> {
        "".into()
    }

    fn render_prompt_multiline_indicator(&self) -> std::borrow::Cow<'_, str> {
        MORE.into()
    }

    fn render_prompt_history_search_indicator(
        &self,
        _search: reedline::PromptHistorySearch,
    ) -> std::borrow::Cow<'_, str> {
        "(search) ".into()
    }
}
