// Dubbing: the worker's `dub` stage.
//
//   frames ──▶ FaceTracker (detect, landmarks, bridging, smoothing; context frames included)
//          ──▶ FaceWarp.crop (S×S) ──▶ SwapTalkModel: encode + quantize both halves,
//              swap (job has a source face) , lip sync (frame's mel window, R = T), decode
//          ──▶ FaceWarp.paste (feathered mask: lower face for lip sync, whole face for swap)
//   frames without a face, and context frames outside the output range, pass through unchanged.
//
// `DubEngine` holds what lives for the whole worker process (model, face models, the job's
// encoded source face); `DubProcessor` is one segment's state (tracker, mel, scratch memory).
import DubfarmCore
import Engine
import FaceAnalysis
import Foundation
import Logging
import VQModel

/// The model a dub worker runs and where it came from.
public struct DubModel: Sendable {
    public let model: SwapTalkModel
    /// Advertised in READY: `small@untrained-seed-1`, or `NAME@<hash of the weights file>`.
    public let id: String
    /// False for seeded weights built in memory.
    public let trained: Bool

    /// The seed of the untrained weights a worker builds when it is given no `--model`.
    public static let defaultSeed: UInt64 = 1

    /// Seeded untrained weights of a named configuration, built in memory (deterministic).
    public static func untrained(config name: String = "small", seed: UInt64 = defaultSeed) throws -> DubModel {
        let config: ModelConfig
        do { config = try ModelConfig.named(name) } catch {
            throw DubfarmError(.configuration, "model configuration: \(error)")
        }
        let tensors = Dictionary(uniqueKeysWithValues: SwapTalkModel.initialWeights(config, seed: seed))
        do {
            let model = try SwapTalkModel(config: config, tensors: tensors, file: "seeded \(name) weights")
            return DubModel(model: model, id: "\(name)@untrained-seed-\(seed)", trained: false)
        } catch {
            throw DubfarmError(.internalError, "building the seeded \(name) model failed: \(error)")
        }
    }

    /// Loads a weights directory (`manifest.json` + `model.safetensors`, e.g. a converted checkpoint).
    public static func load(directory: URL) throws -> DubModel {
        let model: SwapTalkModel
        do { model = try SwapTalkModel.load(directory: directory) } catch {
            throw DubfarmError(.badInput, "model directory \(directory.path): \(error)")
        }
        let weights = directory.appendingPathComponent(SwapTalkModel.weightsFile)
        let hash = try fileHash(weights)
        return DubModel(model: model, id: "\(model.config.name)@\(String(hash, radix: 16).leftPadded(to: 16))", trained: true)
    }

    private static func fileHash(_ url: URL) throws -> UInt64 {
        guard let h = FileHandle(forReadingAtPath: url.path) else {
            throw DubfarmError(.io, "cannot open \(url.path) to identify the model")
        }
        defer { try? h.close() }
        var hash = FNV1a()
        while true {
            let chunk: Data
            do { chunk = try h.read(upToCount: 1 << 22) ?? Data() } catch {
                throw DubfarmError(.io, "cannot read \(url.path): \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            chunk.withUnsafeBytes { hash.add($0) }
        }
        return hash.value
    }
}

/// 64-bit FNV-1a: a fast, stable content hash (identifies weights and source faces; not security).
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        value = h
    }

    static func hash(_ bytes: [UInt8]) -> UInt64 {
        var f = FNV1a()
        bytes.withUnsafeBytes { f.add($0) }
        return f.value
    }
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
