//! `bksh`: the bkjs shell, same as `bkjs run-shell`.

fn main() -> std::process::ExitCode {
    bkjs::shell_main(bkjs::App::default())
}
