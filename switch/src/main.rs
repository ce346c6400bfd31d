//! The `switch` binary: runs the switch, or an operator tool
//! (`switch::cli`).

fn main() -> anyhow::Result<()> {
    switch::cli::run()
}
