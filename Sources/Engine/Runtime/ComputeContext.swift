import BLAS
import Dispatch

/// Everything an operation needs besides its operands: the thread budget, the scratch
/// ``Workspace`` and a FLOP counter.
///
/// One context per worker thread of inference. The thread count is the number of the engine's
/// own workers: matrix products are split over them (``gemm(transA:transB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``)
/// with OpenBLAS itself kept single-threaded, so OpenBLAS's spinning pool never competes with
/// the engine's loops (normalisation, Winograd transforms, im2col) for the cores.
public final class ComputeContext: @unchecked Sendable {
    /// Threads used by sgemm and by the engine's parallel loops.
    public private(set) var threads: Int
    /// Scratch memory for intermediates; reset between frames.
    public let workspace: Workspace
    /// Floating-point operations issued so far (multiply and add counted separately).
    public var flops: Double = 0

    /// A context using `threads` threads (at least 1).
    public init(threads: Int = 1, workspace: Workspace = Workspace()) {
        self.threads = max(1, threads)
        self.workspace = workspace
        BLAS.setThreads(1)
    }

    /// Changes the thread count of this context.
    public func setThreads(_ n: Int) {
        threads = max(1, n)
    }

    /// `C = alpha · op(A) · op(B) + beta · C` (row-major), split over the context's threads by
    /// rows of `C` (or by columns when there are few rows), each part one single-threaded sgemm.
    public func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let work = Double(m) * Double(n) * Double(k)
        if threads == 1 || work < 262_144 || (m < 32 && n < 32) {
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                       b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        let parts = threads
        if m >= 16 * parts || m >= n {
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

    /// Runs `body(i)` for `i` in `0..<count`, split into contiguous chunks over the threads.
    @inlinable
    public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
        let workers = min(threads, max(1, count / max(1, minChunk)))
        if workers <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let lo = count * w / workers, hi = count * (w + 1) / workers
                for i in lo..<hi { box.value(i) }
            }
        }
    }
}

/// Carries a non-Sendable closure into `concurrentPerform`; the engine's loop bodies write
/// disjoint memory per index.
@usableFromInline
struct UncheckedBox<T>: @unchecked Sendable {
    @usableFromInline let value: T
    @usableFromInline init(_ value: T) { self.value = value }
}
