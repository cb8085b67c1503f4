//! The stock `bkjs` binary: the library with no application of its own.

fn main() -> std::process::ExitCode {
    bkjs::run(bkjs::App::default())
}
