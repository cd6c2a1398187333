import Engine
import Foundation

/// The SwapTalk-style model: VQGAN (shared encoder, upper and lower codebooks, decoder),
/// face-swap transformer, lip-sync UNet and audio encoder, all in the VQ token space.
///
/// Tensor conventions (batch 1, float32): images `[3, S, S]` with values in `[-1, 1]`, face
/// halves `[3, S/2, S]`, token grids `[E, H, W]`, mel windows `[melFrames, melBins]`, audio
/// tokens `[melFrames, audioDim]`. Every entry point takes a ``ComputeContext``; results are
/// workspace tensors valid until the context's workspace is reset (``copy()`` to keep one).
package final class SwapTalkModel: @unchecked Sendable {
    /// Which face half (and codebook).
    package enum Half: String, Sendable, CaseIterable { case upper, lower }

    package let config: ModelConfig
    let encoder: Encoder
    let quantizers: [Half: VectorQuantizer]
    let faceSwap: FaceSwap
    let audioEncoder: AudioEncoder
    let unet: LipSyncUNet
    let decoder: Decoder

    /// Builds the model over `tensors`, checking them all against the configuration; one error
    /// lists every missing, extra and mis-shaped tensor.
    package init(config: ModelConfig, tensors: [String: Tensor], file: String = "weights") throws {
        try config.validate()
        let p = Parameters(tensors: tensors)
        let parts = Self.build(p, config)
        try p.finish(file: file)
        self.config = config
        (encoder, quantizers, faceSwap, audioEncoder, unet, decoder) = parts
    }

    private static func build(_ p: Parameters, _ c: ModelConfig)
        -> (Encoder, [Half: VectorQuantizer], FaceSwap, AudioEncoder, LipSyncUNet, Decoder) {
        let enc = Encoder(p, c)
        let q: [Half: VectorQuantizer] = [
            .upper: VectorQuantizer(codebook: p.tensor("quantize_upper.embedding.weight", [c.codebookSize, c.embedDim])),
            .lower: VectorQuantizer(codebook: p.tensor("quantize_lower.embedding.weight", [c.codebookSize, c.embedDim])),
        ]
        return (enc, q, FaceSwap(p, c), AudioEncoder(p, c), LipSyncUNet(p, c), Decoder(p, c))
    }

    /// Name and shape of every parameter of a configuration, in a fixed order.
    package static func parameterSpecs(_ config: ModelConfig) -> [(name: String, shape: [Int])] {
        let p = Parameters()
        _ = build(p, config)
        return p.specs
    }

    /// Parameter count per module (`encoder`, `quantize`, `swap`, `audio`, `lipsync`, `decoder`).
    package static func parameterCounts(_ config: ModelConfig) -> [String: Int] {
        var r: [String: Int] = [:]
        for s in parameterSpecs(config) { r[module(of: s.name), default: 0] += s.shape.reduce(1, *) }
        return r
    }

    static func module(of name: String) -> String {
        if name.hasPrefix("encoder.") || name.hasPrefix("quant_conv") { return "encode" }
        if name.hasPrefix("quantize_") { return "quantize" }
        if name.hasPrefix("decoder.") || name.hasPrefix("post_quant_conv") { return "decode" }
        return String(name.prefix { $0 != "." })
    }

    // MARK: weights on disk

    /// File names inside a weights directory.
    package static let manifestFile = "manifest.json", weightsFile = "model.safetensors"

    /// Loads `manifest.json` and `model.safetensors` from a directory.
    package static func load(directory: URL) throws -> SwapTalkModel {
        let config = try ModelConfig.load(directory: directory)
        let url = directory.appendingPathComponent(weightsFile)
        return try SwapTalkModel(config: config, tensors: try SafeTensors.read(url), file: url.path)
    }

    /// Seeded untrained weights: the same configuration and seed give the same values on every
    /// machine. Conv/linear weights uniform in ±1/√fan_in, biases 0, norm scales 1, embeddings
    /// uniform in ±0.02, codebooks uniform in ±1/K.
    package static func initialWeights(_ config: ModelConfig, seed: UInt64) -> [(String, Tensor)] {
        var rng = SeededRandom(seed: seed)
        return parameterSpecs(config).map { spec in
            let (name, shape) = spec
            let n = shape.reduce(1, *)
            let values: [Float]
            if shape.count == 1 {
                values = [Float](repeating: name.hasSuffix(".weight") ? 1 : 0, count: n)
            } else if name.hasSuffix("embedding.weight") {
                values = rng.uniforms(n, -1 / Float(shape[0]), 1 / Float(shape[0]))
            } else if name.hasSuffix("_emb") {
                values = rng.uniforms(n, -0.02, 0.02)
            } else {
                let b = 1 / Float(shape.dropFirst().reduce(1, *)).squareRoot()
                values = rng.uniforms(n, -b, b)
            }
            return (name, Tensor(shape: shape, values: values))
        }
    }

    /// Writes `manifest.json` and seeded untrained `model.safetensors` into `directory`.
    package static func writeInitialWeights(_ config: ModelConfig, seed: UInt64, to directory: URL) throws {
        do { try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw ModelError(.io, "cannot create \(directory.path): \(error.localizedDescription)")
        }
        do { try config.manifestJSON().write(to: directory.appendingPathComponent(manifestFile), options: .atomic) } catch {
            throw ModelError(.io, "cannot write the manifest in \(directory.path): \(error.localizedDescription)")
        }
        try SafeTensors.write(initialWeights(config, seed: seed), to: directory.appendingPathComponent(weightsFile),
                              metadata: ["config": config.name, "seed": String(seed), "trained": "false"])
    }

    // MARK: entry points

    private func expect(_ t: Tensor, _ shape: [Int], _ what: String) throws {
        guard t.shape == shape else {
            throw ModelError(.badInput, "\(what) has shape \(t.shape); configuration '\(config.name)' needs \(shape)")
        }
    }

    /// Encodes one face half `[3, S/2, S]` to continuous tokens `[E, S/2f, S/f]` (after `quant_conv`).
    package func encode(_ half: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        try expect(half, [3, config.imageSize / 2, config.imageSize], "face half")
        return ctx.workspace.scoped { encoder(half, ctx) }
    }

    /// Nearest-code quantisation of a half's tokens with that half's codebook.
    package func quantize(_ z: Tensor, half: Half, _ ctx: ComputeContext) throws -> (indices: [Int32], quantized: Tensor) {
        try expect(z, [config.embedDim, config.halfGrid.h, config.halfGrid.w], "\(half.rawValue) tokens")
        return quantizers[half]!(z, ctx)
    }

    /// Encodes and quantises both halves of a face `[3, S, S]`, returning the joined grid `[E, G, G]`.
    package func tokenize(_ image: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        try tokenizeWithIndices(image, ctx).grid
    }

    /// ``tokenize(_:_:)`` that also returns the chosen code of every upper and lower position.
    package func tokenizeWithIndices(_ image: Tensor, _ ctx: ComputeContext) throws
        -> (grid: Tensor, upper: [Int32], lower: [Int32]) {
        try expect(image, [3, config.imageSize, config.imageSize], "face image")
        let s = config.imageSize
        let up = try quantize(try encode(Shape.sliceHeight(image, from: 0, count: s / 2, ctx), ctx), half: .upper, ctx)
        let lo = try quantize(try encode(Shape.sliceHeight(image, from: s / 2, count: s / 2, ctx), ctx), half: .lower, ctx)
        return (Shape.concatHeight([up.quantized, lo.quantized], ctx), up.indices, lo.indices)
    }

    /// Prepares a source face's token grid `[E, G, G]` for swapping (once per job).
    package func prepareSource(tokens: Tensor, _ ctx: ComputeContext) throws -> SwapSource {
        try expect(tokens, [config.embedDim, config.gridSize, config.gridSize], "source tokens")
        return faceSwap.prepare(source: tokens, ctx)
    }

    /// Encodes, quantises and prepares a source face image `[3, S, S]` (once per job).
    package func prepareSource(image: Tensor, _ ctx: ComputeContext) throws -> SwapSource {
        try prepareSource(tokens: try tokenize(image, ctx), ctx)
    }

    /// Swaps the source identity onto a target token grid `[E, G, G]`.
    package func swap(target: Tensor, source: SwapSource, _ ctx: ComputeContext) throws -> Tensor {
        try expect(target, [config.embedDim, config.gridSize, config.gridSize], "target tokens")
        return ctx.workspace.scoped { faceSwap(target: target, source: source, ctx) }
    }

    /// Audio tokens `[melFrames, audioDim]` from a log-mel window `[melFrames, melBins]`.
    package func audio(mel: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        try expect(mel, [config.melFrames, config.melBins], "mel window")
        return ctx.workspace.scoped { audioEncoder(mel, ctx) }
    }

    /// Lip-synced lower-half tokens from the target and reference lower halves and audio tokens.
    package func lipsync(target: Tensor, reference: Tensor, audio: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        let g = [config.embedDim, config.halfGrid.h, config.halfGrid.w]
        try expect(target, g, "lip-sync target"); try expect(reference, g, "lip-sync reference")
        try expect(audio, [config.melFrames, config.audioDim], "audio tokens")
        return ctx.workspace.scoped { unet(target: target, reference: reference, audio: audio, ctx) }
    }

    /// Decodes a token grid `[E, G, G]` to an image `[3, S, S]`.
    package func decode(_ grid: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        try expect(grid, [config.embedDim, config.gridSize, config.gridSize], "token grid")
        return ctx.workspace.scoped { decoder(grid, ctx) }
    }

    /// One dubbed frame: tokenize the target, swap in the source, lip-sync the lower half to the
    /// mel window with the frame's own lower half as reference (R = T, the paper's choice for
    /// dubbing), decode. The face-warping branch is bypassed, as at the paper's inference.
    package func runFrame(target: Tensor, source: SwapSource, mel: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        try runFrame(tokens: try tokenize(target, ctx), source: source, mel: mel, ctx)
    }

    /// ``runFrame(target:source:mel:_:)`` from an already tokenized target grid `[E, G, G]`.
    package func runFrame(tokens t: Tensor, source: SwapSource, mel: Tensor, _ ctx: ComputeContext) throws -> Tensor {
        let swapped = try swap(target: t, source: source, ctx)
        let h = config.halfGrid.h
        let lower = Shape.sliceHeight(swapped, from: h, count: h, ctx)
        let synced = try lipsync(target: lower, reference: lower, audio: try audio(mel: mel, ctx), ctx)
        let joined = Shape.concatHeight([Shape.sliceHeight(swapped, from: 0, count: h, ctx), synced], ctx)
        return try decode(joined, ctx)
    }
}
