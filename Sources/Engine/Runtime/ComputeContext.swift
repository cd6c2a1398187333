import BLAS
import Dispatch

/// Everything an operation needs besides its operands: the thread budget, the scratch
/// ``Workspace`` and a FLOP counter.
///
/// One context per worker thread of inference. The thread count applies to OpenBLAS (a
/// process-wide setting, set when the context is made and by ``setThreads(_:)``) and to the
/// engine's own loops (normalisation, Winograd transforms, im2col).
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
        BLAS.setThreads(self.threads)
    }

    /// Changes the thread count of this context and of OpenBLAS.
    public func setThreads(_ n: Int) {
        threads = max(1, n)
        BLAS.setThreads(threads)
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
