import EngineKernels
import EngineKernelsAVX2
import Foundation

/// The vector kernels an operation runs: one of the two builds of the `EngineKernels` sources.
///
/// The engine's own loops (activations, softmax, GroupNorm, Winograd transforms) are written on
/// `SIMD8<Float>`. Compiled for the baseline x86-64 target each such operation is two SSE
/// instructions; the `avx2` build (`-target-cpu haswell`) makes it one 256-bit instruction.
/// ``active`` is the AVX2 build when the CPU has every feature that target assumes (AVX2, FMA,
/// BMI1/2, F16C, MOVBE, LZCNT), else the baseline one. `DUBFARM_KERNELS=baseline` forces the
/// baseline build (for comparisons); the results of the two are identical.
package struct KernelSet: Sendable {
    /// `baseline` or `avx2`.
    package let name: String
    let silu: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let gelu: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let softmaxRow: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let moments: @Sendable (UnsafePointer<Float>, Int) -> (mean: Double, variance: Double)
    let affine: @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Float, Float, Bool) -> Void
    let winogradInput: @Sendable (UnsafePointer<Float>, Int, Int, Int, Int, Int, Int, Int, Bool,
                                  UnsafePointer<Float>?, UnsafePointer<Float>?, Bool,
                                  Int, Int, Int, Int, Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    let winogradOutput: @Sendable (UnsafePointer<Float>, Int, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                   UnsafeMutablePointer<Float>, Int, Int, Int, Int, Int, Int, Int, Int,
                                   UnsafeMutablePointer<Float>) -> Void
    let conv3x3Direct: @Sendable (UnsafePointer<Float>, Int, Int, Int, Int, UnsafePointer<Float>, Int, UnsafePointer<Float>?,
                                  UnsafePointer<Float>?, UnsafeMutablePointer<Float>, Int, Int, UnsafeMutablePointer<Float>) -> Void

    /// The build for the baseline target (any x86-64 or arm64 CPU).
    package static let baseline = KernelSet(
        name: "baseline",
        silu: { EngineKernels.Kernels.silu($0, $1) },
        gelu: { EngineKernels.Kernels.gelu($0, $1) },
        softmaxRow: { EngineKernels.Kernels.softmaxRow($0, $1) },
        moments: { EngineKernels.Kernels.moments($0, $1) },
        affine: { EngineKernels.Kernels.affine($0, $1, $2, scale: $3, shift: $4, silu: $5) },
        winogradInput: {
            EngineKernels.Kernels.winogradInput(x: $0, channels: $1, channelStride: $2, srcH: $3, srcW: $4, h: $5, w: $6, padding: $7, upsample: $8,
                                                scale: $9, shift: $10, silu: $11, tileRows: $12, $13, tilesPerRow: $14,
                                                ph: $15, twV: $16, ntS: $17, v: $18, scratch: $19)
        },
        winogradOutput: {
            EngineKernels.Kernels.winogradOutput(m: $0, channels: $1, channelStride: $2, bias: $3, residual: $4, out: $5, oh: $6, ow: $7,
                                                 tileRows: $8, $9, tilesPerRow: $10, ph: $11, twV: $12, ntS: $13, scratch: $14)
        },
        conv3x3Direct: {
            EngineKernels.Kernels.conv3x3Direct(x: $0, channels: $1, h: $2, w: $3, padding: $4, weight: $5, outChannels: $6, bias: $7,
                                            residual: $8, out: $9, rows: $10, $11, scratch: $12)
        })

    /// The build for AVX2 CPUs (only run where ``cpuSupportsAVX2`` holds).
    package static let avx2 = KernelSet(
        name: "avx2",
        silu: { EngineKernelsAVX2.Kernels.silu($0, $1) },
        gelu: { EngineKernelsAVX2.Kernels.gelu($0, $1) },
        softmaxRow: { EngineKernelsAVX2.Kernels.softmaxRow($0, $1) },
        moments: { EngineKernelsAVX2.Kernels.moments($0, $1) },
        affine: { EngineKernelsAVX2.Kernels.affine($0, $1, $2, scale: $3, shift: $4, silu: $5) },
        winogradInput: {
            EngineKernelsAVX2.Kernels.winogradInput(x: $0, channels: $1, channelStride: $2, srcH: $3, srcW: $4, h: $5, w: $6, padding: $7, upsample: $8,
                                                    scale: $9, shift: $10, silu: $11, tileRows: $12, $13, tilesPerRow: $14,
                                                    ph: $15, twV: $16, ntS: $17, v: $18, scratch: $19)
        },
        winogradOutput: {
            EngineKernelsAVX2.Kernels.winogradOutput(m: $0, channels: $1, channelStride: $2, bias: $3, residual: $4, out: $5, oh: $6, ow: $7,
                                                     tileRows: $8, $9, tilesPerRow: $10, ph: $11, twV: $12, ntS: $13, scratch: $14)
        },
        conv3x3Direct: {
            EngineKernelsAVX2.Kernels.conv3x3Direct(x: $0, channels: $1, h: $2, w: $3, padding: $4, weight: $5, outChannels: $6, bias: $7,
                                            residual: $8, out: $9, rows: $10, $11, scratch: $12)
        })

    /// Floats of scratch one `conv3x3Direct` call needs for a band of `rows` output rows
    /// (the same in both builds).
    static func directScratch(channels: Int, rows: Int, ow: Int, outChannels: Int) -> Int {
        EngineKernels.Kernels.directScratch(channels: channels, rows: rows, ow: ow, outChannels: outChannels)
    }

    /// Whether this CPU (and kernel) runs the `avx2` build: x86-64 Linux whose `/proc/cpuinfo`
    /// lists every feature of `-target-cpu haswell`.
    package static let cpuSupportsAVX2: Bool = {
        #if arch(x86_64) && os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let flags = Set(line.split(separator: " ").map(String.init))
        return ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "popcnt", "sse4_2"].allSatisfy(flags.contains)
        #else
        return false
        #endif
    }()

    /// The build every context uses unless told otherwise: `avx2` where supported, unless
    /// `DUBFARM_KERNELS=baseline`.
    package static let active: KernelSet = {
        if ProcessInfo.processInfo.environment["DUBFARM_KERNELS"] == "baseline" { return .baseline }
        return cpuSupportsAVX2 ? .avx2 : .baseline
    }()

    /// The builds this machine can run (for tests that compare them).
    package static var available: [KernelSet] { cpuSupportsAVX2 ? [.baseline, .avx2] : [.baseline] }
}
