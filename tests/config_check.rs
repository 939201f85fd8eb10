//! The example configuration loads, and bad files are refused with file:line:column and path.

use std::path::Path;

#[test]
fn example_loads_and_renders() {
    let out = holdfast::config::check_file(Path::new("config/example.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{out}");
}
