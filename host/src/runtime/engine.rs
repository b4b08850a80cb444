//! The wasmtime engine every component runs on: the pooling allocator sized for the node's concurrency, and the epoch ticker that makes deadlines.

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeConfig;

/// How often the epoch advances; deadlines are counted in these ticks.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine, with a thread that advances its epoch every [`EPOCH_TICK`] for as long
/// as the engine lives.
pub(super) fn new(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let n = config.concurrency;
    // A Rust component is one core module plus a few shims; these bounds leave room.
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes)
        // Keeping the first pages resident and letting the kernel tell which pages
        // were touched cuts the per-request reset that dominates instantiation.
        .linear_memory_keep_resident(1 << 20)
        .pagemap_scan(Enabled::Auto);
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .wasm_component_model_async(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&wasm)?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(engine)
}
