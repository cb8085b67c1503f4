//! `bksh`: the bkjs shell, same as `bkjs run-shell`.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]

fn main() -> std::process::ExitCode {
    bkjs::shell_main(bkjs::App::default())
}
