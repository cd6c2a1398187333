import Foundation
import BLAS
import Dispatch
import Synchronization

/// Everything an operation needs besides its operands: the thread budget, the scratch
/// ``Workspace`` and a FLOP counter.
///
/// One context per worker thread of inference. The thread count is the number of the engine's
/// own workers: matrix products are split over them (``gemm(transA:transB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``)
/// with OpenBLAS itself kept single-threaded, so OpenBLAS's spinning pool never competes with
/// the engine's loops (normalisation, Winograd transforms, im2col) for the cores.
package final class ComputeContext: @unchecked Sendable {
    /// Threads used by sgemm and by the engine's parallel loops.
    package private(set) var threads: Int
    /// Scratch memory for intermediates; reset between frames.
    package let workspace: Workspace
    /// Floating-point operations issued so far (multiply and add counted separately).
    package var flops: Double = 0
    /// The vector kernels this context's operations run (``KernelSet/active`` unless set).
    package var kernels: KernelSet = .active
    /// Per-operation timing, when set (``LayerProfile``; nil in production).
    package var profile: LayerProfile?
    /// Whether models fuse a GroupNorm (+ SiLU) into the convolution that reads it
    /// (``Conv2D/callAsFunction(_:input:upsample2x:residual:_:)``) instead of writing the
    /// normalised map. Off by default, on with `DUBFARM_FUSE_NORM=1`: the results are
    /// identical and the scratch memory smaller (`small`: 18.8 instead of 24.8 MB), but it was
    /// not faster (2-thread `small` decoder, interleaved runs: about 5 % more CPU time; each
    /// source row is normalised once per Winograd block, ~1.2× per value with the overlap).
    package var fuseNormalization: Bool = ComputeContext.fuseNormalizationDefault
    static let fuseNormalizationDefault = ProcessInfo.processInfo.environment["DUBFARM_FUSE_NORM"] == "1"

    /// A context using `threads` threads (at least 1).
    package init(threads: Int = 1, workspace: Workspace = Workspace()) {
        self.threads = max(1, threads)
        self.workspace = workspace
        BLAS.setThreads(1)
    }

    /// Changes the thread count of this context.
    package func setThreads(_ n: Int) {
        threads = max(1, n)
    }

    /// `C = alpha · op(A) · op(B) + beta · C` (row-major), split over the context's threads,
    /// each part one single-threaded sgemm.
    ///
    /// Every part packs the whole of the operand it shares with the others, so the split is
    /// chosen to duplicate the cheaper one: by rows of `C` (each part re-packs `B`, `k × n`)
    /// when `n ≤ m`, by columns (each part re-packs `A`, `m × k`) otherwise. Products below
    /// ``serialWork`` multiply-adds run on the calling thread: splitting them costs more in
    /// packing and hand-offs than it saves (measured on the transformer's 256-token products).
    package func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let work = m * n * k
        if threads == 1 || work < Self.serialWork || (m < 32 && n < 64) {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                       b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        // one part per thread; two per thread when the parts stay large, for balance on a
        // shared machine
        var parts = work >= 32 * Self.serialWork * threads ? 2 * threads : threads
        let byRows = n <= m ? m >= 16 * parts || n < 32 * parts : n < 32 * parts
        if byRows { parts = max(1, min(parts, m / 8)) } else { parts = max(1, min(parts, n / 16)) }
        if byRows {
            parallelFor(parts) { p in
                let lo = (m * p / parts) & ~7, hi = p == parts - 1 ? m : (m * (p + 1) / parts) & ~7
                if hi <= lo { return }
                BLAS.sgemm(transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha,
                           a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb, beta: beta, c: c + lo * ldc, ldc: ldc)
            }
        } else {
            parallelFor(parts) { p in
                let lo = (n * p / parts) & ~15, hi = p == parts - 1 ? n : (n * (p + 1) / parts) & ~15
                if hi <= lo { return }
                BLAS.sgemm(transA: transA, transB: transB, m: m, n: hi - lo, k: k, alpha: alpha, a: a, lda: lda,
                           b: transB ? b + lo * ldb : b + lo, ldb: ldb, beta: beta, c: c + lo, ldc: ldc)
            }
        }
    }

    /// Multiply-adds below which ``gemm(transA:transB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``
    /// does not split a product; `DUBFARM_GEMM_SERIAL` overrides (for tuning).
    package static let serialWork: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_GEMM_SERIAL"], let n = Int(v), n > 0 { return n }
        return 4_000_000
    }()

    /// Runs `body(i)` for `i` in `0..<count`, in contiguous chunks handed to the threads on
    /// demand (a few chunks per thread, so a core slowed by another process does not hold up
    /// the rest).
    @inlinable
    package func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
        let chunks = min(threads * 4, max(1, count / max(1, minChunk)), count)
        if threads <= 1 || chunks <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { w in
                let lo = count * w / chunks, hi = count * (w + 1) / chunks
                for i in lo..<hi { box.value(i) }
            }
        }
    }

    /// Runs `body(worker)` once on each of `workers` threads (for loops that claim their own
    /// work: ``claim(_:workers:_:)``).
    @inlinable
    package func onWorkers(_ workers: Int, _ body: (Int) -> Void) {
        if workers <= 1 { body(0); return }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: workers) { box.value($0) }
        }
    }

    /// Runs `body(worker, item)` for every `item` in `0..<items`, the items claimed one at a time
    /// from a shared ``WorkCounter`` by `workers` threads (so a core slowed by another process
    /// does not hold up the rest); `worker` (`0..<workers`) picks the thread's own scratch.
    @inlinable
    package func claim(_ items: Int, workers: Int, _ body: (_ worker: Int, _ item: Int) -> Void) {
        let counter = WorkCounter()
        onWorkers(workers) { worker in
            while true {
                let item = counter.next()
                if item >= items { break }
                body(worker, item)
            }
        }
    }
}

/// A shared counter handing out work items to threads (`next()` returns 0, 1, 2, … once each).
package final class WorkCounter: @unchecked Sendable {
    private let value = Atomic<Int>(0)
    package init() {}
    /// The next unclaimed item.
    package func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// Carries a non-Sendable closure into `concurrentPerform`; the engine's loop bodies write
/// disjoint memory per index.
@usableFromInline
struct UncheckedBox<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
