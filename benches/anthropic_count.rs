//! Runs one `anthropic` benchmark's loop body N times, for counting
//! instructions with callgrind: wall clock on a shared machine moves by 2x,
//! instruction counts do not. Run it at two N and take the difference, so
//! that start-up, input building and the runtime cancel out:
//!
//! ```sh
//! cargo bench --bench anthropic_count --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null <binary> to_upstream 200   # and 400
//! ```
//! per iteration = (Ir(400) - Ir(200)) / 200. `<binary>` is the path cargo
//! prints (`target/release/deps/anthropic_count-*`).

use std::hint::black_box;

mod anthropic;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        // `cargo bench` and `cargo test --all-targets` run every bench
        // target (with `--bench` or nothing): not an error for them.
        eprintln!("usage: anthropic_count <loop> <iterations> (nothing to count)");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let i = anthropic::Inputs::new();
    if name == "sizes" {
        // What the README quotes about the inputs.
        println!(
            "messages request {} B, chat equivalent {} B, anthropic answer {} B, completion {} B",
            i.messages.len(),
            i.chat.len(),
            i.anthropic_answer.len(),
            i.completion.len()
        );
        println!(
            "anthropic stream {} events / {} B, chat stream {} events / {} B",
            anthropic::Inputs::stream_events(&i.anthropic_stream),
            i.anthropic_stream.len(),
            anthropic::Inputs::stream_events(&i.chat_stream),
            i.chat_stream.len()
        );
        return;
    }
    let mut chunks = i.chat_chunks();
    let mut events = i.messages_events();
    for _ in 0..n {
        let len = match name.as_str() {
            "chat_in" => i.chat_in().len(),
            "to_upstream" => i.to_upstream().len(),
            "ingress_in" => i.ingress_in().len(),
            "passthrough" => i.passthrough().len(),
            "openai_answer" => i.openai_answer().len(),
            "upstream_answer" => i.upstream_answer().len(),
            "ingress_answer" => i.ingress_answer().len(),
            "normalize_chunk" => i.normalize_chunk().len(),
            "normalize_chunk_usage_null" => i.normalize_chunk_usage_null().len(),
            "upstream_chunk" => i.upstream_chunk(&mut chunks).len(),
            "ingress_chunk" => i.ingress_chunk(&mut events).len(),
            "openai_stream" => rt.block_on(i.openai_stream()),
            "upstream_stream" => rt.block_on(i.upstream_stream()),
            "ingress_stream" => rt.block_on(i.ingress_stream()),
            other => {
                eprintln!("unknown loop {other}");
                std::process::exit(2);
            }
        };
        black_box(len);
    }
}
