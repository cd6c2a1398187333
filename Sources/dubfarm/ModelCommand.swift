import ArgumentParser
import Engine
import Foundation
import VQModel

/// `dubfarm model …`: create, inspect, run and benchmark the SwapTalk-style model.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Create, inspect, run and benchmark the face-swap / lip-sync model.",
        subcommands: [Init.self, Info.self, Run.self, Bench.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write seeded, UNTRAINED weights and the manifest for a named configuration.")
        @Option(help: "Configuration: tiny, small or paper.") var config: String = "small"
        @Option(help: "Seed of the deterministic generator.") var seed: UInt64 = 0
        @Option(help: "Output directory (manifest.json, model.safetensors).") var out: String

        func run() throws {
            let c = try ModelConfig.named(config)
            let dir = URL(fileURLWithPath: out)
            try SwapTalkModel.writeInitialWeights(c, seed: seed, to: dir)
            let n = SwapTalkModel.parameterCounts(c).values.reduce(0, +)
            print("wrote \(dir.path): configuration '\(c.name)', \(n) parameters, seed \(seed)")
            print("note: these weights are UNTRAINED (random); they exercise the pipeline but produce no meaningful faces.")
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print parameters and GFLOPs per frame for each module.")
        @Argument(help: "Weights directory (manifest.json, model.safetensors).") var directory: String?
        @Option(help: "Describe a named configuration instead of a weights directory.") var config: String?
        @Flag(help: "Print JSON: {configuration, imageSize, modules: [{module, parameters, gflopsPerFrame}]}.") var json = false

        func run() throws {
            let model: SwapTalkModel
            if let d = directory {
                model = try SwapTalkModel.load(directory: URL(fileURLWithPath: d))
            } else {
                let c = try ModelConfig.named(config ?? "small")
                model = try SwapTalkModel(config: c, tensors: Dictionary(uniqueKeysWithValues: SwapTalkModel.initialWeights(c, seed: 0)))
            }
            let c = model.config
            let ctx = ComputeContext(threads: 1)
            let inputs = FrameInputs(c, seed: 1)
            let src = try model.prepareSource(image: inputs.source, ctx)
            let (_, costs) = try model.profileFrame(target: inputs.target, source: src, mel: inputs.mel, ctx)
            let params = SwapTalkModel.parameterCounts(c)
            if json {
                struct Module: Encodable { var module: String; var parameters: Int; var gflopsPerFrame: Double }
                struct Report: Encodable { var configuration: String; var imageSize: Int; var modules: [Module] }
                return try printJSON(Report(configuration: c.name, imageSize: c.imageSize, modules: costs.map {
                    Module(module: $0.module, parameters: params[$0.module] ?? 0, gflopsPerFrame: $0.flops / 1e9)
                }))
            }
            print("configuration \(c.name): \(c.imageSize)×\(c.imageSize) crop, \(c.downsampling)× downsampling, "
                + "\(c.gridSize)×\(c.gridSize) tokens, 2 codebooks × \(c.codebookSize) × \(c.embedDim)")
            print("module      parameters   GFLOP/frame")
            for cost in costs {
                print(cost.module.padding(toLength: 10, withPad: " ", startingAt: 0)
                    + String(params[cost.module] ?? 0).leftPad(12) + String(format: "%14.3f", cost.flops / 1e9))
            }
            print("total".padding(toLength: 10, withPad: " ", startingAt: 0)
                + String(params.values.reduce(0, +)).leftPad(12) + String(format: "%14.3f", costs.reduce(0) { $0 + $1.flops } / 1e9))
        }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the modules on the tensors of a safetensors file.",
            discussion: """
            Inputs present decide what runs: encode.input [3,S/2,S]; quantize_upper.input / quantize_lower.input \
            [E,S/2f,S/f]; swap.target + swap.source [E,G,G]; audio.input [16,80]; lipsync.target + \
            lipsync.reference [E,G/2,G] + lipsync.audio [16,A]; decode.input [E,G,G]; frame.target + \
            frame.source [3,S,S] + frame.mel [16,80]. Outputs are NAME.output (and NAME.indices for quantize).
            """)
        @Option(help: "Weights directory.") var weights: String
        @Option(help: "Input safetensors file.") var inputs: String
        @Option(help: "Output safetensors file.") var out: String
        @Option(help: "Threads.") var threads: Int = 1

        func run() throws {
            let model = try SwapTalkModel.load(directory: URL(fileURLWithPath: weights))
            let t = try SafeTensors.read(URL(fileURLWithPath: inputs))
            let ctx = ComputeContext(threads: threads)
            var out: [(String, Tensor)] = []
            func input(_ k: String) throws -> Tensor {
                guard let v = t[k] else { throw ModelError(.badInput, "\(inputs) has no tensor '\(k)'") }
                return v
            }
            if let x = t["encode.input"] { out.append(("encode.output", try model.encode(x, ctx).copy())) }
            for half in SwapTalkModel.Half.allCases {
                if let z = t["quantize_\(half.rawValue).input"] {
                    let (idx, q) = try model.quantize(z, half: half, ctx)
                    out.append(("quantize_\(half.rawValue).output", q.copy()))
                    out.append(("quantize_\(half.rawValue).indices", Tensor(shape: [idx.count], values: idx.map(Float.init))))
                }
            }
            if t["swap.target"] != nil {
                let src = try model.prepareSource(tokens: try input("swap.source"), ctx)
                out.append(("swap.output", try model.swap(target: try input("swap.target"), source: src, ctx).copy()))
            }
            if let m = t["audio.input"] { out.append(("audio.output", try model.audio(mel: m, ctx).copy())) }
            if t["lipsync.target"] != nil {
                out.append(("lipsync.output", try model.lipsync(target: try input("lipsync.target"), reference: try input("lipsync.reference"),
                                                                 audio: try input("lipsync.audio"), ctx).copy()))
            }
            if let z = t["decode.input"] { out.append(("decode.output", try model.decode(z, ctx).copy())) }
            if t["frame.target"] != nil {
                let src = try model.prepareSource(image: try input("frame.source"), ctx)
                let tok = try model.tokenizeWithIndices(try input("frame.target"), ctx)
                out.append(("frame.output", try model.runFrame(tokens: tok.grid, source: src, mel: try input("frame.mel"), ctx).copy()))
                out.append(("frame.indices_upper", Tensor(shape: [tok.upper.count], values: tok.upper.map(Float.init))))
                out.append(("frame.indices_lower", Tensor(shape: [tok.lower.count], values: tok.lower.map(Float.init))))
            }
            if out.isEmpty { throw ModelError(.badInput, "\(inputs) holds none of the known input tensors (see --help)") }
            try SafeTensors.write(out, to: URL(fileURLWithPath: self.out))
            print("wrote \(out.count) tensors to \(self.out)")
        }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Frames per second, per-module time, GFLOP/s and share of the measured sgemm peak.",
            discussion: """
            Without --batch (or with --batch 1), frames run one at a time, each frame's work split over --threads \
            (latency mode). With --batch N (N ≥ 2), N frames run at once, each on a single-threaded context of its own, min(N, --threads) \
            side by side (throughput mode): each module runs for the whole batch, its time is the batch's wall \
            time, and GFLOP/s and the shares of peak are throughput figures (N frames' FLOPs over that time); \
            latency_ms is the wall time of one batch (a frame's result is ready when its batch ends).
            """)
        @Option(help: "Configuration: tiny, small or paper.") var config: String = "small"
        @Option(help: "Threads (sgemm and engine loops).") var threads: Int = 1
        @Option(help: "Timed frames (after two warm-up frames or batches); default depends on the configuration.") var frames: Int?
        @Option(help: "Frames run at once, one single-threaded context per thread (throughput mode, N ≥ 2); omit or 1 for one frame at a time.")
        var batch: Int?
        @Flag(help: "Also print wall time per operation and shape (latency mode only; adds a clock read per operation).")
        var layers = false
        @Flag(help: "Print one JSON object.") var json = false

        func run() throws {
            let c = try ModelConfig.named(config)
            if let b = batch, b < 1 { throw ValidationError("--batch must be at least 1") }
            // --batch 1 is one frame at a time with all the threads on it: running a batch of one
            // frame on one single-threaded context would leave the other threads idle
            let throughput = (batch ?? 1) > 1
            if layers && throughput { throw ValidationError("--layers measures one frame at a time; leave out --batch") }
            let model = try SwapTalkModel(config: c, tensors: Dictionary(uniqueKeysWithValues: SwapTalkModel.initialWeights(c, seed: 0)))
            let perCall = throughput ? batch! : 1
            let runner = FrameBatch(threads: threads, mode: throughput ? .framesInParallel : .splitEachFrame)
            let profile = layers ? LayerProfile() : nil
            runner.contexts[0].profile = profile
            // The machine's sgemm peak, measured before the frames and again, briefly, after each
            // timed call, and the best of them kept: the shares below are against the best the
            // machine gave during the run, not against one window that may have caught a busier
            // (or quieter) moment of a shared host than the frames did.
            let peakContext = ComputeContext(threads: threads)
            let peakBefore = Benchmark.sgemmPeak(peakContext)
            var peak = peakBefore
            let inputs = (0..<perCall).map { FrameInputs(c, seed: 2 + UInt64($0)) }
            let src = try model.prepareSource(image: inputs[0].source, runner.contexts[0])
            let n = frames ?? (c.name == "paper" ? 3 : c.name == "small" ? 20 : 50)
            let calls = max(1, (n + perCall - 1) / perCall)
            func call() throws -> [ModuleCost] {
                defer { runner.reset() }
                if !throughput {
                    return try model.profileFrame(target: inputs[0].target, source: src, mel: inputs[0].mel, runner.contexts[0]).costs
                }
                return try model.profileFrames(targets: inputs.map(\.target), source: src, mels: inputs.map(\.mel), runner).costs
            }
            // two warm-up calls: the first sizes the workspaces, the second touches their pages
            for _ in 0..<2 { _ = try call() }
            profile?.reset()
            var seconds: [String: Double] = [:], flops: [String: Double] = [:], cpu: [String: Double] = [:]
            var callTimes: [Double] = []
            for _ in 0..<calls {
                let costs = try call()
                // wall and CPU seconds of the whole call (divided by all frames run below); FLOPs of one frame
                for k in costs {
                    seconds[k.module, default: 0] += k.seconds
                    flops[k.module] = k.flops / Double(perCall)
                    cpu[k.module, default: 0] += k.cpuSeconds
                }
                callTimes.append(costs.reduce(0) { $0 + $1.seconds })
                peak = max(peak, Benchmark.sgemmPeak(peakContext, seconds: 0.1))
            }
            let framesRun = calls * perCall
            let perFrame = callTimes.reduce(0, +) / Double(framesRun)
            let latency = callTimes.reduce(0, +) / Double(calls)
            let totalFlops = flops.values.reduce(0, +)
            let gflops = totalFlops / perFrame / 1e9
            let decGflops = flops["decode"]! / (seconds["decode"]! / Double(framesRun)) / 1e9
            let rss = Benchmark.peakRSSBytes()
            // work efficiency: GFLOP per CPU second against one core's sgemm per CPU second;
            // insensitive to waiting for a core on a loaded machine (wall figures are not)
            let corePeak = Benchmark.sgemmPeakPerCPUSecond()
            let decCPUShare = flops["decode"]! / (cpu["decode"]! / Double(framesRun)) / 1e9 / corePeak
            let cpuPerFrame = cpu.values.reduce(0, +) / Double(framesRun)
            let mode = throughput ? "throughput" : "latency"
            if json {
                var modules: [String: Any] = [:]
                for m in SwapTalkModel.moduleNames {
                    modules[m] = ["ms": seconds[m]! / Double(framesRun) * 1000, "cpu_ms": cpu[m]! / Double(framesRun) * 1000,
                                  "gflop": flops[m]! / 1e9, "gflops": flops[m]! / (seconds[m]! / Double(framesRun)) / 1e9]
                }
                var obj: [String: Any] = [
                    "engine": "dubfarm", "config": c.name, "threads": threads, "frames": framesRun,
                    "batch": perCall, "mode": mode, "latency_ms": latency * 1000,
                    "fps": 1 / perFrame, "ms_per_frame": perFrame * 1000, "gflop_per_frame": totalFlops / 1e9,
                    "gflops": gflops, "sgemm_peak_gflops": peak, "sgemm_peak_before_gflops": peakBefore, "peak_share": gflops / peak,
                    "decoder_peak_share": decGflops / peak, "peak_rss_mb": Double(rss) / 1048576,
                    "cpu_ms_per_frame": cpuPerFrame * 1000, "core_sgemm_gflops_per_cpu_s": corePeak,
                    "decoder_cpu_peak_share": decCPUShare, "load_average": Benchmark.loadAverage(),
                    "workspace_mb": Double(runner.reservedBytes) / 1048576, "modules": modules,
                    "kernels": runner.contexts[0].kernels.name,
                ]
                if let profile {
                    obj["layers"] = profile.entries.map { e -> [String: Any] in
                        ["module": e.module, "op": e.label, "calls_per_frame": Double(e.calls) / Double(framesRun),
                         "ms": e.seconds / Double(framesRun) * 1000, "gflops": e.seconds > 0 ? e.flops / e.seconds / 1e9 : 0]
                    }
                }
                let d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                print(String(decoding: d, as: UTF8.self))
            } else {
                print("dubfarm model bench: config \(c.name), \(threads) thread(s), \(framesRun) frames (untrained weights), "
                      + (!throughput ? "one frame at a time (latency mode)"
                                      : "batches of \(perCall) frames, \(runner.width) side by side on single-threaded contexts (throughput mode)"))
                print(String(format: "  %.2f frames/s, %.2f ms/frame, latency %.2f ms, %.3f GFLOP/frame, %.1f GFLOP/s",
                             1 / perFrame, perFrame * 1000, latency * 1000, totalFlops / 1e9, gflops))
                print(String(format: "  sgemm peak (same run, best of before and between calls) %.1f GFLOP/s (before: %.1f); model at %.0f%% of peak, decoder at %.0f%% (%@)",
                             peak, peakBefore, 100 * gflops / peak, 100 * decGflops / peak, mode as NSString))
                print(String(format: "  CPU %.1f ms/frame (all threads); decoder work efficiency %.0f%% of one core's sgemm per CPU second (%.1f); load %.2f",
                             cpuPerFrame * 1000, 100 * decCPUShare, corePeak, Benchmark.loadAverage()))
                for m in SwapTalkModel.moduleNames {
                    let ms = seconds[m]! / Double(framesRun) * 1000
                    print(String(format: "  %-9@ %9.2f ms %9.3f GFLOP %8.1f GFLOP/s", m as NSString, ms, flops[m]! / 1e9, flops[m]! / (ms / 1000) / 1e9))
                }
                print(String(format: "  peak RSS %.1f MB (workspaces %.1f MB); vector kernels: %@", Double(rss) / 1048576,
                             Double(runner.reservedBytes) / 1048576, runner.contexts[0].kernels.name as NSString))
                if let profile {
                    print("  per operation (ms per frame; the rest of a module is layout copies and small steps):")
                    for e in profile.entries {
                        print(String(format: "    %-8@ %-46@ %5.1f× %8.3f ms %8.1f GFLOP/s", e.module as NSString, e.label as NSString,
                                     Double(e.calls) / Double(framesRun), e.seconds / Double(framesRun) * 1000,
                                     e.seconds > 0 ? e.flops / e.seconds / 1e9 : 0))
                    }
                }
            }
        }
    }
}

/// Deterministic random frame inputs for `info` and `bench`.
struct FrameInputs {
    let target: Tensor, source: Tensor, mel: Tensor
    init(_ c: ModelConfig, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        let n = 3 * c.imageSize * c.imageSize
        target = Tensor(shape: [3, c.imageSize, c.imageSize], values: rng.uniforms(n))
        source = Tensor(shape: [3, c.imageSize, c.imageSize], values: rng.uniforms(n))
        mel = Tensor(shape: [c.melFrames, c.melBins], values: rng.uniforms(c.melFrames * c.melBins, -4, 2))
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
