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
package struct DubModel: Sendable {
    package let model: SwapTalkModel
    /// Advertised in READY: `small@untrained-seed-1`, or `NAME@<hash of the weights file>`.
    package let id: String
    /// False for seeded weights built in memory (and for `dubfarm model init` directories,
    /// whose metadata says `trained: false`).
    package let trained: Bool
    /// The weights directory, nil for seeded weights built in memory.
    package var directory: URL? = nil
    /// The modules the weights' `dubfarm.trained` metadata lists as trained (module names as
    /// `SwapTalkModel.parameterCounts` gives them); nil when the file does not say (older
    /// checkpoints, seeded weights): then every module is used as it is.
    package var trainedModules: Set<String>? = nil

    /// Whether a job's source face is applied: false only for weights whose metadata lists the
    /// trained modules without `swap` (a swap that was never trained would make the face worse).
    package var swapsFaces: Bool { trainedModules?.contains("swap") ?? true }

    /// The metadata key listing the trained modules, comma-separated (`encode,quantize,decode,audio,lipsync`).
    package static let trainedMetadataKey = "dubfarm.trained"

    /// The seed of the untrained weights a worker builds when it is given no `--model`.
    package static let defaultSeed: UInt64 = 1

    /// Seeded untrained weights of a named configuration, built in memory (deterministic).
    package static func untrained(config name: String = "small", seed: UInt64 = defaultSeed) throws -> DubModel {
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
    package static func load(directory: URL) throws -> DubModel {
        let model: SwapTalkModel
        do { model = try SwapTalkModel.load(directory: directory) } catch {
            throw DubfarmError(.badInput, "model directory \(directory.path): \(error)")
        }
        let weights = directory.appendingPathComponent(SwapTalkModel.weightsFile)
        let hash = try fileHash(weights)
        let metadata: [String: String]
        do { metadata = try SafeTensors.readMetadata(weights) } catch {
            throw DubfarmError(.badInput, "model directory \(directory.path): \(error)")
        }
        var m = DubModel(model: model, id: "\(model.config.name)@\(String(hash, radix: 16).leftPadded(to: 16))",
                         trained: metadata["trained"] != "false")
        m.directory = directory
        m.trainedModules = metadata[trainedMetadataKey].map {
            Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        return m
    }

    /// Loads what a resolved ``DubModelSpec`` names.
    package static func load(_ spec: DubModelSpec) throws -> DubModel {
        switch spec {
        case .directory(let url): return try load(directory: url)
        case .untrained(let config): return try untrained(config: config)
        }
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

/// Which weights a dub worker runs: a weights directory, or seeded untrained weights of a named
/// configuration (only on explicit request, `untrained:CONFIG`).
package enum DubModelSpec: Sendable, Equatable, CustomStringConvertible {
    case directory(URL)
    case untrained(config: String)

    /// The directory of the bundled trained default, beside the repository's or an install's binary.
    package static let bundledName = "models/dubfarm-small"
    /// Where an install (the Docker image, a package) puts the bundled default.
    package static let installedDirectory = "/usr/share/dubfarm/models/dubfarm-small"

    /// `DIR` or `untrained:CONFIG`, as `--model` takes it.
    package var description: String {
        switch self {
        case .directory(let url): return url.path
        case .untrained(let c): return "untrained:\(c)"
        }
    }

    /// Parses a `--model` / `DUBFARM_MODEL` value: `untrained:tiny|small|paper`, else a directory.
    package static func parse(_ text: String) throws -> DubModelSpec {
        if text.hasPrefix("untrained") {
            let name = text.hasPrefix("untrained:") ? String(text.dropFirst("untrained:".count)) : ""
            guard ModelConfig.named[name] != nil else {
                throw DubfarmError(.configuration, "model '\(text)': seeded weights are asked for as untrained:CONFIG with CONFIG one of "
                                   + ModelConfig.named.keys.sorted().joined(separator: ", "))
            }
            return .untrained(config: name)
        }
        return .directory(URL(fileURLWithPath: text).standardizedFileURL)
    }

    /// Candidate directories of the bundled default for an executable at `executable`: its
    /// directory and up to four above it (`.build/release/dubfarm` and its resolved
    /// `.build/<triple>/release/dubfarm` both reach the repository), then the install location.
    package static func bundledCandidates(executable: String) -> [URL] {
        var out: [URL] = []
        var dir = URL(fileURLWithPath: executable).standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<5 {
            out.append(dir.appendingPathComponent(bundledName))
            if dir.path == "/" { break }
            dir = dir.deletingLastPathComponent()
        }
        out.append(URL(fileURLWithPath: installedDirectory))
        var seen = Set<String>()
        return out.filter { seen.insert($0.path).inserted }
    }

    /// The model a worker runs: `flag` (`--model`), else `$DUBFARM_MODEL`, else the bundled
    /// trained default found beside `executable` (see ``bundledCandidates(executable:)``).
    /// Returns the spec and where it came from; throws, saying where it looked, when none is found.
    package static func resolve(flag: String?, environment: [String: String], executable: String) throws
        -> (spec: DubModelSpec, from: String) {
        if let flag, !flag.isEmpty { return (try parse(flag), "--model") }
        if let env = environment["DUBFARM_MODEL"], !env.isEmpty { return (try parse(env), "DUBFARM_MODEL") }
        let candidates = bundledCandidates(executable: executable)
        if let found = candidates.first(where: {
            FileManager.default.fileExists(atPath: $0.appendingPathComponent(SwapTalkModel.manifestFile).path)
                && FileManager.default.fileExists(atPath: $0.appendingPathComponent(SwapTalkModel.weightsFile).path)
        }) {
            return (.directory(found), "bundled")
        }
        throw DubfarmError(.configuration, """
            no model given and the bundled trained weights (\(bundledName)) were not found; looked in \
            \(candidates.map(\.path).joined(separator: ", ")). Pass --model DIR (or set DUBFARM_MODEL) with a weights \
            directory, or --model untrained:small for seeded UNTRAINED weights (noise-like faces, for tests)
            """)
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
