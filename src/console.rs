//! Standard error shared by the log and, on a terminal, a live progress block kept at the
//! bottom of the screen.
//!
//! A block redrawn in place and log lines written by other threads would overwrite each
//! other, so both go through here: the logger writes through [`LogTarget`], which erases the
//! block, writes the log line and draws the block again, all under one lock and in one
//! `write` to stderr. Lines are cut to the terminal's width, since a wrapped line would make
//! the cursor arithmetic of the next redraw wrong. Without a terminal nothing is drawn and
//! log lines pass straight through.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use parking_lot::Mutex;

pub struct Console {
    terminal: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    block: Vec<String>,
    /// Lines of the block currently on the screen.
    drawn: usize,
    /// Log bytes not yet ended by a newline.
    pending: Vec<u8>,
}

/// The process's stderr.
pub fn global() -> &'static Console {
    static GLOBAL: OnceLock<Console> = OnceLock::new();
    GLOBAL.get_or_init(|| Console { terminal: io::stderr().is_terminal(), state: Mutex::new(State::default()) })
}

impl Console {
    /// Whether stderr is a terminal (a live block can be drawn).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Replace the live block (terminal only; otherwise nothing happens).
    pub fn show(&self, lines: Vec<String>) {
        if !self.terminal {
            return;
        }
        let mut st = self.state.lock();
        let mut out = Vec::new();
        erase(&mut out, st.drawn);
        st.block = lines;
        st.drawn = draw(&mut out, &st.block);
        emit(&out);
    }

    /// Erase the live block and forget it.
    pub fn clear(&self) {
        if !self.terminal {
            return;
        }
        let mut st = self.state.lock();
        let mut out = Vec::new();
        erase(&mut out, st.drawn);
        st.block.clear();
        st.drawn = 0;
        emit(&out);
    }

    fn log(&self, bytes: &[u8], flush: bool) {
        let mut st = self.state.lock();
        st.pending.extend_from_slice(bytes);
        let cut = if flush { st.pending.len() } else { st.pending.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) };
        if cut == 0 {
            return;
        }
        let text: Vec<u8> = st.pending.drain(..cut).collect();
        let mut out = Vec::with_capacity(text.len() + 256);
        erase(&mut out, st.drawn);
        out.extend_from_slice(&text);
        st.drawn = draw(&mut out, &st.block);
        emit(&out);
    }
}

fn emit(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    let mut e = io::stderr().lock();
    let _ = e.write_all(out);
    let _ = e.flush();
}

/// Move up over the `lines` drawn and clear to the end of the screen.
fn erase(out: &mut Vec<u8>, lines: usize) {
    if lines > 0 {
        out.extend_from_slice(format!("\x1b[{lines}A\r\x1b[J").as_bytes());
    }
}

/// Draw the block, each line cut to the terminal's width; returns the lines drawn.
fn draw(out: &mut Vec<u8>, block: &[String]) -> usize {
    let width = terminal_width().saturating_sub(1).max(20);
    for line in block {
        out.extend(line.chars().take(width).collect::<String>().bytes());
        out.push(b'\n');
    }
    block.len()
}

/// The log's writer (`env_logger::Target::Pipe`): lines go out between redraws of the block.
pub struct LogTarget;

impl Write for LogTarget {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        global().log(buf, false);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        global().log(&[], true);
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn terminal_width() -> usize {
    #[repr(C)]
    struct Winsize {
        rows: u16,
        cols: u16,
        xpixel: u16,
        ypixel: u16,
    }
    extern "C" {
        fn ioctl(fd: i32, request: std::ffi::c_ulong, ...) -> i32;
    }
    const TIOCGWINSZ: std::ffi::c_ulong = 0x5413;
    let mut ws = Winsize { rows: 0, cols: 0, xpixel: 0, ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` (four u16) to the pointer given.
    let rc = unsafe { ioctl(2, TIOCGWINSZ, &mut ws as *mut Winsize) };
    if rc == 0 && ws.cols > 0 {
        ws.cols as usize
    } else {
        80
    }
}

#[cfg(not(target_os = "linux"))]
fn terminal_width() -> usize {
    80
}
