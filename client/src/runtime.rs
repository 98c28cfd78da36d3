//! The `no_std` runtime of the production Wasm build (feature `tiny-runtime`).
//!
//! std's panic machinery formats messages even when nobody can read them, which pulls in
//! `core::fmt` and Unicode tables; dlmalloc is large too. Here a panic traps at once (the
//! page's inline script then falls back to reloading every 30 s), and allocation uses
//! lol_alloc's free list: the client allocates little, and only a handful of sizes.

use lol_alloc::{FreeListAllocator, LockedAllocator};

#[global_allocator]
static ALLOCATOR: LockedAllocator<FreeListAllocator> =
    LockedAllocator::new(FreeListAllocator::new());

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
