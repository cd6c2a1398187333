import Dispatch
import Foundation

/// Runs independent items — frames of a video — on a set of ``ComputeContext``s at once.
///
/// Two ways to spend `threads` cores on a stream of frames:
/// - **per frame** (``Mode/splitEachFrame``): one context with `threads` threads; frames run one
///   after another and each frame's products and loops are split over the threads (lowest
///   latency per frame, but every layer hands work off between threads);
/// - **frame-parallel** (``Mode/framesInParallel``): `threads` single-threaded contexts, each
///   with its own ``Workspace``; up to `threads` frames run at the same time, each entirely on one
///   thread (no hand-offs inside a frame, so more frames per second where the layers are too
///   small to split well; the scratch memory is `threads` workspaces).
///
/// Items are assigned statically: item `i` of a call always runs on context `i % contexts.count`,
/// so a multi-phase computation (``map(_:_:)`` once per module) finds each frame's earlier
/// results in the workspace of the context it runs on. The items of one context run in order.
package final class FrameBatch: @unchecked Sendable {
    /// How the threads are spent.
    package enum Mode: String, Sendable, CaseIterable {
        /// One context with all the threads; frames one after another.
        case splitEachFrame = "split"
        /// One single-threaded context per thread; frames side by side.
        case framesInParallel = "frames"
    }

    /// The contexts items run on (one per thread in ``Mode/framesInParallel``, else one).
    package let contexts: [ComputeContext]
    package let mode: Mode
    /// The total thread budget.
    package let threads: Int

    /// A batch runner using `threads` threads in `mode`.
    package init(threads: Int, mode: Mode) {
        let t = max(1, threads)
        self.threads = t
        self.mode = t == 1 ? .splitEachFrame : mode
        contexts = self.mode == .framesInParallel ? (0..<t).map { _ in ComputeContext(threads: 1) } : [ComputeContext(threads: t)]
    }

    /// Frames that run at the same time: `threads` in ``Mode/framesInParallel``, else 1.
    package var width: Int { contexts.count }

    /// FLOPs issued on all contexts so far.
    package var flops: Double { contexts.reduce(0) { $0 + $1.flops } }

    /// Bytes reserved by all the contexts' workspaces.
    package var reservedBytes: Int { contexts.reduce(0) { $0 + $1.workspace.reservedBytes } }

    /// The context item `i` of a `count`-item call runs on.
    package func context(forItem i: Int, of count: Int) -> ComputeContext {
        contexts[i % min(contexts.count, max(1, count))]
    }

    /// Releases every context's scratch memory (all workspace tensors of earlier calls become invalid).
    package func reset() {
        for c in contexts { c.workspace.reset() }
    }

    /// `body(i, context)` for `i` in `0..<count`, items of different contexts at the same time;
    /// results in item order. If items throw, the error of the lowest-numbered failing item is
    /// rethrown after all contexts have stopped (a context stops at its first failing item).
    package func map<R>(_ count: Int, _ body: (Int, ComputeContext) throws -> R) throws -> [R] {
        if count == 0 { return [] }
        let workers = min(contexts.count, count)
        if workers == 1 {
            let ctx = contexts[0]
            return try (0..<count).map { try body($0, ctx) }
        }
        let results = UnsafeMutableBufferPointer<R?>.allocate(capacity: count)
        results.initialize(repeating: nil)
        defer { results.deinitialize(); results.deallocate() }
        // one failure slot per context: each is written by its own thread only
        let failures = UnsafeMutableBufferPointer<(item: Int, error: any Error)?>.allocate(capacity: workers)
        failures.initialize(repeating: nil)
        defer { failures.deinitialize(); failures.deallocate() }
        let contexts = self.contexts
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox((body, results, failures))
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let (body, results, failures) = box.value
                var i = w
                while i < count {
                    do { results[i] = try body(i, contexts[w]) } catch {
                        failures[w] = (i, error)
                        return
                    }
                    i += workers
                }
            }
        }
        if let first = failures.compactMap({ $0 }).min(by: { $0.item < $1.item }) { throw first.error }
        return results.map { $0! }
    }
}
