import DubfarmCore
import FaceAnalysis
import Foundation
import Logging
import Testing
import VQModel
import Worker
@testable import Dubbing

/// The repository root (this file is Tests/DubbingTests/…).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
/// The committed trained default, `models/dubfarm-small/`.
let committedModel = repoRoot.appendingPathComponent(DubModelSpec.bundledName)
var haveCommittedModel: Bool {
    FileManager.default.fileExists(atPath: committedModel.appendingPathComponent(SwapTalkModel.weightsFile).path)
}

/// A weights directory of `config`'s seeded weights whose metadata lists `trained` as the trained modules.
func weightsDirectory(_ config: ModelConfig, trained: String?, in parent: URL, name: String = "weights") throws -> URL {
    let dir = parent.appendingPathComponent(name)
    try SwapTalkModel.writeInitialWeights(config, seed: 3, to: dir)
    if let trained {
        try SafeTensors.write(SwapTalkModel.initialWeights(config, seed: 3), to: dir.appendingPathComponent(SwapTalkModel.weightsFile),
                              metadata: [DubModel.trainedMetadataKey: trained, "config": config.name])
    }
    return dir
}

func temporaryDirectory(_ tag: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dub-\(tag)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

@Suite("Model resolution")
struct ModelResolutionTests {
    @Test("--model wins over DUBFARM_MODEL, which wins over the bundled directory found above the executable")
    func precedence() throws {
        let root = try temporaryDirectory("resolve")
        defer { try? FileManager.default.removeItem(at: root) }
        // A fake checkout: ROOT/models/dubfarm-small and ROOT/.build/x86_64-unknown-linux-gnu/release/dubfarm.
        let bundled = try weightsDirectory(.tiny, trained: nil, in: root.appendingPathComponent("models"), name: "dubfarm-small")
        let exe = root.appendingPathComponent(".build/x86_64-unknown-linux-gnu/release/dubfarm").path
        let flagDir = root.appendingPathComponent("flag").path, envDir = root.appendingPathComponent("env").path

        let a = try DubModelSpec.resolve(flag: flagDir, environment: ["DUBFARM_MODEL": envDir], executable: exe)
        #expect(a.spec.description == flagDir && a.from == "--model")
        let b = try DubModelSpec.resolve(flag: nil, environment: ["DUBFARM_MODEL": envDir], executable: exe)
        #expect(b.spec.description == envDir && b.from == "DUBFARM_MODEL")
        let c = try DubModelSpec.resolve(flag: nil, environment: [:], executable: exe)
        #expect(c.spec.description == bundled.standardizedFileURL.path && c.from == "bundled", "\(c.spec)")
        // The unresolved .build/release/dubfarm reaches it too.
        let d = try DubModelSpec.resolve(flag: nil, environment: [:], executable: root.appendingPathComponent(".build/release/dubfarm").path)
        #expect(d.spec == c.spec)
        #expect(DubModelSpec.bundledCandidates(executable: exe).last?.path == DubModelSpec.installedDirectory)
    }

    @Test("untrained:CONFIG asks for seeded weights; a bad configuration name says which exist")
    func untrainedSpec() throws {
        let r = try DubModelSpec.resolve(flag: "untrained:small", environment: ["DUBFARM_MODEL": "/nowhere"], executable: "/nowhere/dubfarm")
        #expect(r.spec == .untrained(config: "small"))
        #expect(try DubModelSpec.resolve(flag: nil, environment: ["DUBFARM_MODEL": "untrained:tiny"], executable: "/x/dubfarm").spec
                == .untrained(config: "tiny"))
        let m = try DubModel.load(r.spec)
        #expect(m.id == "small@untrained-seed-1" && !m.trained && m.directory == nil && m.swapsFaces)
        do {
            _ = try DubModelSpec.parse("untrained:huge")
            Issue.record("untrained:huge must be refused")
        } catch let e as DubfarmError {
            #expect(e.code == .configuration && e.message.contains("paper, small, tiny"), "\(e.message)")
        }
    }

    @Test("nothing given and no bundled weights: the error says where it looked and how to fix it")
    func nothingFound() throws {
        let root = try temporaryDirectory("none")
        defer { try? FileManager.default.removeItem(at: root) }
        let exe = root.appendingPathComponent("bin/dubfarm").path
        // Only meaningful where no install put weights in /usr/share.
        guard !FileManager.default.fileExists(atPath: DubModelSpec.installedDirectory) else { return }
        do {
            _ = try DubModelSpec.resolve(flag: nil, environment: [:], executable: exe)
            Issue.record("resolution must fail without any model")
        } catch let e as DubfarmError {
            #expect(e.code == .configuration)
            #expect(e.message.contains(root.appendingPathComponent("bin/models/dubfarm-small").path), "\(e.message)")
            #expect(e.message.contains(DubModelSpec.installedDirectory))
            #expect(e.message.contains("--model DIR") && e.message.contains("--model untrained:small"), "\(e.message)")
        }
    }

    @Test("the dubfarm.trained metadata is read: trained modules, swapsFaces; none recorded keeps swapping")
    func trainedMetadata() throws {
        let root = try temporaryDirectory("meta")
        defer { try? FileManager.default.removeItem(at: root) }
        let noSwap = try DubModel.load(directory: weightsDirectory(.tiny, trained: "encode,quantize,decode,audio,lipsync", in: root, name: "a"))
        #expect(noSwap.trainedModules == ["encode", "quantize", "decode", "audio", "lipsync"] && !noSwap.swapsFaces && noSwap.trained)
        #expect(noSwap.id.hasPrefix("tiny@") && !noSwap.id.contains("untrained"))
        let all = try DubModel.load(directory: weightsDirectory(.tiny, trained: "encode,quantize,swap,decode,audio,lipsync", in: root, name: "b"))
        #expect(all.swapsFaces)
        // `dubfarm model init` output: no dubfarm.trained, `trained: false`.
        let seeded = try DubModel.load(directory: weightsDirectory(.tiny, trained: nil, in: root, name: "c"))
        #expect(seeded.trainedModules == nil && seeded.swapsFaces && !seeded.trained)
        #expect(try SafeTensors.readMetadata(root.appendingPathComponent("c/model.safetensors"))["seed"] == "3")
    }

    /// The weights are committed: their absence is a failure, not a reason to skip.
    @Test("the committed models/dubfarm-small is the default of a worker in this checkout, advertised as NAME@hash, every module trained, the swap included")
    func committedDefault() throws {
        // The path `make build` puts the binary at; no flag, no environment.
        let r = try DubModelSpec.resolve(flag: nil, environment: [:], executable: repoRoot.appendingPathComponent(".build/release/dubfarm").path)
        #expect(r.spec.description == committedModel.standardizedFileURL.path && r.from == "bundled", "\(r.spec)")
        let m = try DubModel.load(r.spec)
        let parts = m.id.split(separator: "@")
        #expect(parts.count == 2 && parts[0] == Substring(m.model.config.name) && parts[1].count == 16 && !m.id.contains("untrained"), "\(m.id)")
        #expect(m.trained)
        #expect(m.trainedModules == ["encode", "quantize", "decode", "audio", "lipsync", "swap"], "\(m.trainedModules ?? [])")
        #expect(m.swapsFaces, "the swap is trained (issue 18): a job's --face is applied")
        #expect(FileManager.default.fileExists(atPath: committedModel.appendingPathComponent("MODEL_CARD.md").path))
    }
}

@Suite("Face swap gating", .serialized, .enabled(if: haveMedia, "needs ../shared/media and the face models"))
struct SwapGatingTests {
    @Test("weights whose dubfarm.trained lacks swap: a job with a source face gets exactly the frames of the same job without one")
    func untrainedSwapIsSkipped() throws {
        let root = try temporaryDirectory("gate")
        defer { try? FileManager.default.removeItem(at: root) }
        let model = try DubModel.load(directory: weightsDirectory(.tiny, trained: "encode,quantize,decode,audio,lipsync", in: root))
        let engine = DubEngine(model: model, analyzer: Shared.analyzer, logger: Logger(label: "dub-test"))
        let stage = DubStage(engine: engine)
        let input = try frames("speaker-c.mp4", count: 12)
        let face = try [UInt8](Data(contentsOf: URL(fileURLWithPath: media("face-source.png"))))
        let withFace = try stage.makeProcessor(for: try context(decoded: 0..<12, output: 2..<10, face: face))
        let without = try stage.makeProcessor(for: try context(decoded: 0..<12, output: 2..<10, face: nil))
        let a = try run(withFace, input), b = try run(without, input)
        #expect(a.map(\.index) == input.map(\.index))
        for (x, y) in zip(a, b) { #expect(x.planes == y.planes, "frame \(x.index) differs with and without the source face") }
        let stats = stage.statistics(of: withFace)
        #expect(stats.framesWithFace >= 7 && stats.framesSwapped == 0)
        #expect(engine.sourceEncodings == 0, "the source face is not even encoded")
        #expect(!stage.timings(of: withFace).contains { $0.step == "swap" })
        #expect(zip(a, input).contains { $0.planes != $1.planes }, "lip sync still redraws the mouth")

        // Metadata listing swap (or none at all) keeps swapping.
        let swapping = try DubModel.load(directory: weightsDirectory(.tiny, trained: "encode,quantize,swap,decode,audio,lipsync", in: root, name: "s"))
        let stage2 = DubStage(engine: DubEngine(model: swapping, analyzer: Shared.analyzer, logger: Logger(label: "dub-test")))
        let p = try stage2.makeProcessor(for: try context(decoded: 0..<12, output: 2..<10, face: face))
        _ = try run(p, input)
        #expect(stage2.statistics(of: p).framesSwapped == stage2.statistics(of: p).framesWithFace)
    }
}
