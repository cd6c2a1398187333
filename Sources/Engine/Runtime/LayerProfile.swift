import Foundation

/// Wall time and FLOPs per kind of operation, for finding where a model's time goes
/// (`dubfarm model bench --layers`). Off (nil on the context) in production: the operations
/// then do not read the clock.
///
/// Operations are keyed by the current ``module`` and a label naming the operation and its
/// shape (`conv3x3 64→64 128×128 winograd +res`), so equal layers add up.
package final class LayerProfile: @unchecked Sendable {
    /// A group of calls of one label.
    package struct Entry: Sendable {
        package var module: String
        package var label: String
        package var calls = 0
        package var seconds = 0.0
        package var flops = 0.0
    }

    /// The module that operations are currently booked under (set by the model's profiler).
    package var module = ""
    /// Entries in order of first appearance.
    package private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]

    package init() {}

    /// Adds one call.
    package func add(_ label: String, seconds: Double, flops: Double) {
        let key = module + "\u{1}" + label
        let i: Int
        if let j = index[key] { i = j } else {
            i = entries.count
            index[key] = i
            entries.append(Entry(module: module, label: label))
        }
        entries[i].calls += 1
        entries[i].seconds += seconds
        entries[i].flops += flops
    }

    /// Forgets every entry.
    package func reset() { entries.removeAll(); index.removeAll() }
}

extension ComputeContext {
    /// Runs `body`, booking its wall time and the FLOPs it added under `label` when a
    /// ``profile`` is set.
    @inline(__always)
    func timed<T>(_ label: @autoclosure () -> String, _ body: () -> T) -> T {
        guard let p = profile else { return body() }
        let f0 = flops, t0 = Benchmark.now()
        let r = body()
        p.add(label(), seconds: Benchmark.now() - t0, flops: flops - f0)
        return r
    }
}
