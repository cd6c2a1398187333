import Engine
import Foundation
import Testing
@testable import VQModel

/// Where the committed PyTorch fixtures live, found from this file's path.
enum Fixtures {
    static let tiny = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("tools/reference/fixtures/tiny")

    static func maxRelError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.count == b.count, "\(a.shape) vs \(b.shape)")
        var m: Float = 0, s: Float = 1e-30
        for i in 0..<a.count { m = max(m, abs(a[i] - b[i])); s = max(s, abs(b[i])) }
        return m / s
    }

    /// Drops a leading batch dimension of 1 if the fixture kept one.
    static func squeeze(_ t: Tensor) -> Tensor { t.shape.count == 4 && t.shape[0] == 1 ? t.reshaped(Array(t.shape.dropFirst())) : t }
}

/// The whole `tiny` model against outputs PyTorch produced (tools/reference/make_fixtures.py).
@Suite struct TinyModelFidelityTests {
    let model: SwapTalkModel
    let io: [String: Tensor]

    init() throws {
        model = try SwapTalkModel.load(directory: Fixtures.tiny)
        io = try SafeTensors.read(Fixtures.tiny.appendingPathComponent("io.safetensors")).mapValues(Fixtures.squeeze)
    }

    func check(_ got: Tensor, _ key: String) {
        let want = io["expected." + key]!
        #expect(got.shape == want.shape, "\(key) shape")
        #expect(Fixtures.maxRelError(got, want) < 1e-4, "\(key)")
    }

    /// Every module, at 1 and 2 threads, with each build of the vector kernels this CPU runs,
    /// with GroupNorm + SiLU fused into the convolutions and without.
    @Test(arguments: [1, 2], [true, false]) func everyModuleMatchesPyTorch(threads: Int, fused: Bool) throws {
        for kernels in KernelSet.available {
            let ctx = ComputeContext(threads: threads)
            ctx.kernels = kernels
            ctx.fuseNormalization = fused
            try checkEveryModule(ctx)
        }
    }

    func checkEveryModule(_ ctx: ComputeContext) throws {
        check(try model.encode(io["encode.input"]!, ctx), "encode.output")
        for half in SwapTalkModel.Half.allCases {
            let (idx, q) = try model.quantize(io["quantize_\(half.rawValue).input"]!, half: half, ctx)
            #expect(idx.map(Float.init) == io["expected.quantize_\(half.rawValue).indices"]!.array)
            check(q, "quantize_\(half.rawValue).output")
        }
        let src = try model.prepareSource(tokens: io["swap.source"]!, ctx)
        check(try model.swap(target: io["swap.target"]!, source: src, ctx), "swap.output")
        check(try model.audio(mel: io["audio.input"]!, ctx), "audio.output")
        check(try model.lipsync(target: io["lipsync.target"]!, reference: io["lipsync.reference"]!, audio: io["lipsync.audio"]!, ctx), "lipsync.output")
        check(try model.decode(io["decode.input"]!, ctx), "decode.output")
        let frameSource = try model.prepareSource(image: io["frame.source"]!, ctx)
        check(try model.runFrame(target: io["frame.target"]!, source: frameSource, mel: io["frame.mel"]!, ctx), "frame.output")
    }

    /// The fused GroupNorm + SiLU path gives the unfused model's frame bit for bit (the same
    /// per-value arithmetic), and the AVX2 kernels give the baseline ones' frame bit for bit.
    @Test(arguments: [1, 2]) func fusedAndUnfusedAndKernelBuildsAgreeExactly(threads: Int) throws {
        var frames: [[Float]] = []
        for kernels in KernelSet.available {
            for fused in [false, true] {
                let ctx = ComputeContext(threads: threads)
                ctx.kernels = kernels
                ctx.fuseNormalization = fused
                let src = try model.prepareSource(image: io["frame.source"]!, ctx)
                frames.append(try model.runFrame(target: io["frame.target"]!, source: src, mel: io["frame.mel"]!, ctx).array)
            }
        }
        for f in frames.dropFirst() { #expect(f == frames[0]) }
    }

    @Test func memoryDoesNotGrowWithFrames() throws {
        let ctx = ComputeContext(threads: 1)
        let src = try model.prepareSource(image: io["frame.source"]!, ctx).self
        var reserved: [Int] = []
        for _ in 0..<6 {
            ctx.workspace.reset()
            _ = try model.runFrame(target: io["frame.target"]!, source: src, mel: io["frame.mel"]!, ctx)
            reserved.append(ctx.workspace.reservedBytes)
        }
        #expect(Set(reserved.dropFirst(2)).count == 1, "workspace sizes \(reserved)")
    }

    @Test func wrongInputShapeIsABadInputError() throws {
        let ctx = ComputeContext()
        #expect { try model.decode(Tensor.zeros([3, 4, 4]), ctx) } throws: { ($0 as? ModelError)?.code == .badInput }
    }
}

/// Weight files that do not fit: every problem reported, by name, at once.
@Suite struct WeightLoadingTests {
    let config = ModelConfig.tiny
    var weights: [String: Tensor] { Dictionary(uniqueKeysWithValues: SwapTalkModel.initialWeights(config, seed: 3)) }

    @Test func loadsCompleteWeights() throws {
        _ = try SwapTalkModel(config: config, tensors: weights)
    }

    @Test func reportsMissingExtraAndMisshapedTogether() throws {
        var w = weights
        w["decoder.conv_out.bias"] = nil
        w["swap.pos_emb"] = nil
        w["encoder.unexpected.weight"] = Tensor.zeros([2])
        w["audio.in_proj.weight"] = Tensor.zeros([3, 3])
        do {
            _ = try SwapTalkModel(config: config, tensors: w)
            Issue.record("loading should fail")
        } catch let e as ModelError {
            #expect(e.code == .weightMismatch)
            #expect(Set(e.missing) == ["decoder.conv_out.bias", "swap.pos_emb"])
            #expect(e.extra == ["encoder.unexpected.weight"])
            #expect(e.misshaped == ["audio.in_proj.weight"])
            for n in ["decoder.conv_out.bias", "swap.pos_emb", "encoder.unexpected.weight", "audio.in_proj.weight"] {
                #expect(e.message.contains(n))
            }
        }
    }

    @Test func truncatedFileIsRejected() throws {
        let bytes = SafeTensors.serialize(SwapTalkModel.initialWeights(config, seed: 1))
        for cut in [4, 100, bytes.count - 10] {
            #expect { try SafeTensors.parse(bytes.prefix(cut), name: "cut.safetensors") } throws: {
                ($0 as? ModelError)?.code == .badWeightFile
            }
        }
    }

    static func file(dtype: String, shape: [Int], payload: [UInt8]) -> Data {
        var header = Array("{\"t\":{\"dtype\":\"\(dtype)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[0,\(payload.count)]}}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var d = Data()
        var n = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(contentsOf: header)
        d.append(contentsOf: payload)
        return d
    }

    @Test func unsupportedDTypeIsRejected() throws {
        let d = Self.file(dtype: "I64", shape: [2], payload: [UInt8](repeating: 0, count: 16))
        #expect { try SafeTensors.parse(d, name: "int.safetensors") } throws: { ($0 as? ModelError)?.code == .unsupportedDType }
    }

    @Test func halfAndBFloat16AreWidened() throws {
        // F16: 1.0 = 0x3C00, -2.5 = 0xC100, 2^-24 = 0x0001; BF16: 1.5 = 0x3FC0, -0.5 = 0xBF00
        let f16 = try SafeTensors.parse(Self.file(dtype: "F16", shape: [3], payload: [0x00, 0x3C, 0x00, 0xC1, 0x01, 0x00]), name: "h")
        #expect(f16["t"]!.array == [1, -2.5, Float(1) / 16_777_216])
        let bf = try SafeTensors.parse(Self.file(dtype: "BF16", shape: [2], payload: [0xC0, 0x3F, 0x00, 0xBF]), name: "b")
        #expect(bf["t"]!.array == [1.5, -0.5])
    }

    @Test func roundTripsF32() throws {
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, -6])
        let back = try SafeTensors.parse(SafeTensors.serialize([("x", t)], metadata: ["k": "v"]), name: "rt")
        #expect(back["x"]!.shape == [2, 3] && back["x"]!.array == t.array)
    }
}

/// `model init`: the same seed gives identical bytes.
@Suite struct ModelInitTests {
    @Test func sameSeedSameBytes() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-init-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        let a = base.appendingPathComponent("a"), b = base.appendingPathComponent("b"), c = base.appendingPathComponent("c")
        try SwapTalkModel.writeInitialWeights(.tiny, seed: 42, to: a)
        try SwapTalkModel.writeInitialWeights(.tiny, seed: 42, to: b)
        try SwapTalkModel.writeInitialWeights(.tiny, seed: 43, to: c)
        for f in [SwapTalkModel.manifestFile, SwapTalkModel.weightsFile] {
            #expect(try Data(contentsOf: a.appendingPathComponent(f)) == Data(contentsOf: b.appendingPathComponent(f)))
        }
        #expect(try Data(contentsOf: a.appendingPathComponent(SwapTalkModel.weightsFile)) != Data(contentsOf: c.appendingPathComponent(SwapTalkModel.weightsFile)))
        let m = try SwapTalkModel.load(directory: a)
        #expect(m.config == .tiny)
    }

    @Test func namedConfigurationsAreValid() throws {
        for c in [ModelConfig.tiny, .small, .paper] { try c.validate() }
        #expect(ModelConfig.paper.gridSize == 20 && ModelConfig.paper.downsampling == 16)
        #expect(throws: ModelError.self) { try ModelConfig.named("huge") }
    }
}
