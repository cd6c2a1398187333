import Engine

/// Work and time of one module within one frame.
package struct ModuleCost: Sendable, Codable {
    /// `encode` (both halves), `quantize` (both halves), `swap`, `audio`, `lipsync`, `decode`.
    package var module: String
    /// Floating-point operations (2 per multiply-add).
    package var flops: Double
    /// Wall-clock seconds.
    package var seconds: Double
    /// CPU seconds of all the process's threads (``Benchmark/cpuSeconds()``).
    package var cpuSeconds: Double = 0
}

extension SwapTalkModel {
    /// The module names in frame order.
    package static let moduleNames = ["encode", "quantize", "swap", "audio", "lipsync", "decode"]

    /// ``runFrame(target:source:mel:_:)`` with the FLOPs and wall time of each module.
    package func profileFrame(target: Tensor, source: SwapSource, mel: Tensor, _ ctx: ComputeContext) throws
        -> (image: Tensor, costs: [ModuleCost]) {
        var costs: [ModuleCost] = []
        func measure<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
            ctx.profile?.module = name
            let f0 = ctx.flops, c0 = Benchmark.cpuSeconds(), t0 = Benchmark.now()
            let r = try body()
            let t1 = Benchmark.now(), c1 = Benchmark.cpuSeconds()
            costs.append(ModuleCost(module: name, flops: ctx.flops - f0, seconds: t1 - t0, cpuSeconds: c1 - c0))
            return r
        }
        let s = config.imageSize, h = config.halfGrid.h
        let (zu, zl) = try measure("encode") {
            (try encode(Shape.sliceHeight(target, from: 0, count: s / 2, ctx), ctx),
             try encode(Shape.sliceHeight(target, from: s / 2, count: s / 2, ctx), ctx))
        }
        let grid = try measure("quantize") {
            Shape.concatHeight([try quantize(zu, half: .upper, ctx).quantized, try quantize(zl, half: .lower, ctx).quantized], ctx)
        }
        let swapped = try measure("swap") { try swap(target: grid, source: source, ctx) }
        let tokens = try measure("audio") { try audio(mel: mel, ctx) }
        let synced = try measure("lipsync") { () throws -> Tensor in
            let lower = Shape.sliceHeight(swapped, from: h, count: h, ctx)
            return try lipsync(target: lower, reference: lower, audio: tokens, ctx)
        }
        let image = try measure("decode") {
            try decode(Shape.concatHeight([Shape.sliceHeight(swapped, from: 0, count: h, ctx), synced], ctx), ctx)
        }
        return (image, costs)
    }
}
