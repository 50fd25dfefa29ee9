//! The examples' download progress (`#[path]`-included): the library reports downloads to the
//! reporter a program registers (`finetune::download::set_progress`) and prints nothing itself;
//! this one draws a bar on a terminal (stderr) and prints one line per download otherwise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use finetune::download::{DownloadProgress, set_progress};

/// Download progress on stderr.
struct ConsoleDownloads {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl DownloadProgress for ConsoleDownloads {
    fn started(&self, url: &str, bytes: Option<u64>) {
        if !std::io::stderr().is_terminal() {
            let size = bytes.map(|b| format!(" ({:.1} MB)", b as f64 / 1e6));
            eprintln!("downloading {url}{}", size.unwrap_or_default());
            return;
        }
        let bar = match bytes {
            Some(b) => indicatif::ProgressBar::new(b),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn progressed(&self, _url: &str, received: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.set_position(received);
        }
    }

    fn finished(&self, _url: &str) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Reports this process's downloads on the console.
pub fn report_on_console() {
    set_progress(Some(Arc::new(ConsoleDownloads {
        bar: Mutex::new(None),
    })));
}
