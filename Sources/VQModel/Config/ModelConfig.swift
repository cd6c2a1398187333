import Foundation

/// The architecture's hyperparameters, stored as `manifest.json` beside the weights.
///
/// Fixed by the SwapTalk paper (the `paper` configuration): a 320 × 320 crop, 16× downsampling,
/// two codebooks of 2048 × 256. Everything else is a field here with the documented default of
/// each named configuration.
package struct ModelConfig: Codable, Sendable, Equatable {
    /// Configuration name (`tiny`, `small`, `paper`, or a user's own).
    package var name: String
    /// Face crop side in pixels; the crop is split into upper and lower halves of `S/2 × S`.
    package var imageSize: Int
    /// VQGAN base channel count.
    package var channels: Int
    /// Channel multiplier per encoder/decoder level; levels − 1 stride-2 downsamplings.
    package var channelMult: [Int]
    /// ResNet blocks per level (encoder and decoder).
    package var numResBlocks: Int
    /// GroupNorm groups in the VQGAN.
    package var groups: Int
    /// Channels of the encoder output before `quant_conv`.
    package var zChannels: Int
    /// Codebook vector size (token channels).
    package var embedDim: Int
    /// Codes per codebook (two codebooks: upper and lower face).
    package var codebookSize: Int
    /// Heads of the VQGAN mid-block self-attention.
    package var vqAttentionHeads: Int
    /// Face-swap transformer width, heads, layers and MLP ratio.
    package var swapDim: Int
    package var swapHeads: Int
    package var swapLayers: Int
    package var swapMlpRatio: Int
    /// Lip-sync UNet base channels, per-level multipliers, GroupNorm groups and heads.
    package var unetChannels: Int
    package var unetChannelMult: [Int]
    package var unetGroups: Int
    package var unetHeads: Int
    /// UNet levels with cross-attention to audio (default: the two coarsest) — the mid block
    /// always has it.
    package var unetAttentionLevels: [Int]
    /// Log-mel bins and frames in the per-video-frame audio window (16 × 80 = 0.2 s at hop 200).
    package var melBins: Int
    package var melFrames: Int
    /// Audio encoder width, heads, layers and MLP ratio.
    package var audioDim: Int
    package var audioHeads: Int
    package var audioLayers: Int
    package var audioMlpRatio: Int
    /// `[rowStart, rowEnd, colStart, colEnd)` of the lower-half token grid where the lip-sync
    /// UNet zeroes its *target* input (the mouth) before it runs, so it draws the mouth from the
    /// audio rather than copying it; the same frame can then be target and reference (R = T).
    /// `nil` (older manifests): no mask. Trained models (training/configs/dubfarm-small.json) set it.
    package var lipsyncTargetMask: [Int]? = nil

    /// Spatial downsampling factor of the VQGAN.
    package var downsampling: Int { 1 << (channelMult.count - 1) }
    /// Side of the full token grid.
    package var gridSize: Int { imageSize / downsampling }
    /// Token grid of one face half: `(gridSize / 2) × gridSize`.
    package var halfGrid: (h: Int, w: Int) { (gridSize / 2, gridSize) }

    /// Tests: runs in milliseconds.
    package static let tiny = ModelConfig(
        name: "tiny", imageSize: 16, channels: 8, channelMult: [1, 2], numResBlocks: 1, groups: 4,
        zChannels: 8, embedDim: 8, codebookSize: 16, vqAttentionHeads: 1,
        swapDim: 16, swapHeads: 2, swapLayers: 1, swapMlpRatio: 2,
        unetChannels: 8, unetChannelMult: [1, 2], unetGroups: 4, unetHeads: 2, unetAttentionLevels: [0, 1],
        melBins: 80, melFrames: 16, audioDim: 16, audioHeads: 2, audioLayers: 1, audioMlpRatio: 2)

    /// Demo and CI default: a 128 × 128 crop, 8× downsampling (16 × 16 tokens), sized to run in
    /// real time on two cores.
    package static let small = ModelConfig(
        name: "small", imageSize: 128, channels: 32, channelMult: [1, 2, 2, 4], numResBlocks: 1, groups: 8,
        zChannels: 64, embedDim: 64, codebookSize: 512, vqAttentionHeads: 1,
        swapDim: 128, swapHeads: 4, swapLayers: 2, swapMlpRatio: 4,
        unetChannels: 64, unetChannelMult: [1, 2, 2], unetGroups: 16, unetHeads: 4, unetAttentionLevels: [1, 2],
        melBins: 80, melFrames: 16, audioDim: 128, audioHeads: 4, audioLayers: 2, audioMlpRatio: 4)

    /// The paper's sizes: 320 × 320 crop, 16× downsampling (20 × 20 tokens), 2 × 2048 × 256 codebooks.
    package static let paper = ModelConfig(
        name: "paper", imageSize: 320, channels: 64, channelMult: [1, 1, 2, 2, 4], numResBlocks: 1, groups: 32,
        zChannels: 256, embedDim: 256, codebookSize: 2048, vqAttentionHeads: 1,
        swapDim: 512, swapHeads: 8, swapLayers: 4, swapMlpRatio: 4,
        unetChannels: 256, unetChannelMult: [1, 2], unetGroups: 32, unetHeads: 8, unetAttentionLevels: [0, 1],
        melBins: 80, melFrames: 16, audioDim: 256, audioHeads: 4, audioLayers: 2, audioMlpRatio: 4)

    /// The named configurations.
    package static let named: [String: ModelConfig] = ["tiny": .tiny, "small": .small, "paper": .paper]

    /// A named configuration or ``ModelError/Code/unknownConfig``.
    package static func named(_ name: String) throws -> ModelConfig {
        guard let c = named[name] else {
            throw ModelError(.unknownConfig, "unknown model configuration '\(name)'; known: \(named.keys.sorted().joined(separator: ", "))")
        }
        return c
    }

    /// Checks that the numbers fit together (divisibility of sizes, channels and heads).
    package func validate() throws {
        func need(_ ok: Bool, _ why: String) throws { if !ok { throw ModelError(.badManifest, "configuration '\(name)': \(why)") } }
        try need(!channelMult.isEmpty && !unetChannelMult.isEmpty, "channel multipliers must not be empty")
        try need(imageSize % (2 * downsampling) == 0, "imageSize \(imageSize) must be a multiple of 2 × downsampling (\(2 * downsampling))")
        let unetDiv = 1 << (unetChannelMult.count - 1)
        try need(halfGrid.h % unetDiv == 0 && halfGrid.w % unetDiv == 0,
                 "half token grid \(halfGrid.h)×\(halfGrid.w) must be divisible by \(unetDiv) for the UNet")
        for m in channelMult { try need((channels * m) % groups == 0, "VQGAN channels \(channels * m) not divisible by \(groups) groups") }
        for m in unetChannelMult { try need((unetChannels * m) % unetGroups == 0, "UNet channels not divisible by \(unetGroups) groups") }
        for m in unetChannelMult { try need((unetChannels * m) % unetHeads == 0, "UNet channels not divisible by \(unetHeads) heads") }
        try need((channels * channelMult.last!) % vqAttentionHeads == 0, "VQGAN mid channels not divisible by heads")
        try need(swapDim % swapHeads == 0 && audioDim % audioHeads == 0, "transformer width not divisible by heads")
        try need(unetAttentionLevels.allSatisfy { $0 >= 0 && $0 < unetChannelMult.count }, "unetAttentionLevels out of range")
        if let m = lipsyncTargetMask {
            try need(m.count == 4 && 0 <= m[0] && m[0] < m[1] && m[1] <= halfGrid.h && 0 <= m[2] && m[2] < m[3] && m[3] <= halfGrid.w,
                     "lipsyncTargetMask \(m) must be [rowStart, rowEnd, colStart, colEnd] inside the \(halfGrid.h)×\(halfGrid.w) lower-half grid")
        }
    }

    /// Reads `manifest.json` from a weights directory.
    package static func load(directory: URL) throws -> ModelConfig {
        let url = directory.appendingPathComponent("manifest.json")
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ModelError(.badManifest, "cannot read \(url.path): \(error.localizedDescription)")
        }
        let c: ModelConfig
        do { c = try JSONDecoder().decode(ModelConfig.self, from: data) } catch {
            throw ModelError(.badManifest, "\(url.path) is not a valid model manifest: \(error)")
        }
        try c.validate()
        return c
    }

    /// The manifest as stable, pretty JSON (sorted keys), identical bytes for equal configs.
    package func manifestJSON() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        var d = try e.encode(self)
        d.append(0x0A)
        return d
    }
}
