import AudioFeatures
import DubfarmCore
import FaceAnalysis
import FarmConfig
import FarmProtocol
import FarmTestSupport
import Foundation
import Logging
import MediaPipeline
import Testing
import VQModel
import Worker
@testable import Dubbing
@testable import TrainingData

/// The shared test media (`TestMedia`, FarmTestSupport).
func media(_ name: String) -> String { TestMedia.path(name) }
var haveMedia: Bool {
    FileManager.default.fileExists(atPath: media("speaker-c.mp4")) && FileManager.default.fileExists(atPath: HaarCascade.defaultPath)
}

/// Loaded once (the landmark model takes over a second to read).
enum Shared {
    static let analyzer: FaceAnalyzer = { try! FaceAnalyzer.load() }()
}

func temporaryDirectory(_ tag: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-\(tag)-\(UUID().uuidString.prefix(8))")
}

/// A dataset's frames by clip frame index: crop bytes and mel window.
func readFrames(_ dir: URL, index: DatasetIndex) throws -> [Int: (crop: [UInt8], mel: [Float])] {
    var out: [Int: (crop: [UInt8], mel: [Float])] = [:]
    for shard in index.shards {
        let t = try SafeTensors.readRaw(dir.appendingPathComponent(shard.file)).tensors
        let crops = try #require(t["crops"]?.u8), mel = try #require(t["mel"]).floats, frames = try #require(t["frame"]?.i32)
        let s = index.imageSize, c = s * s * 3, m = index.melBins * index.melFrames
        for (i, f) in frames.enumerated() {
            out[Int(f)] = (Array(crops[(i * c)..<((i + 1) * c)]), Array(mel[(i * m)..<((i + 1) * m)]))
        }
    }
    return out
}

@Suite("Dataset parity with the dub stage", .serialized, .enabled(if: haveMedia, "needs ../shared/media and the face models"))
struct DatasetParityTests {
    /// The dub stage runs speaker-c.mp4 as a farm job would (segments planned by `SegmentPlanner`,
    /// the farm's default context frames and audio margin, `SegmentCutter` bundles, the clip's own
    /// audio as the dub track sliced per task, `SegmentRenderer` decoding, `DubStage`'s processor),
    /// recording the crop and mel window it hands the model for every frame; the dataset builder
    /// runs on the same file. The rule for which frames must agree bit for bit:
    ///
    /// - **Mel windows: every frame.** Both sides compute mel through ``ModelInputs/logMel(_:)`` on
    ///   a window of the same 16 kHz track with silence beyond its ends, and a mel frame depends
    ///   only on the samples within 400 of its centre; the task's margin (0.25 s) covers the
    ///   ±0.1 s window plus 400 samples, so reflect padding at a window's edge never reaches a
    ///   frame that is used, and the builder's whole-clip window starts and ends like the first
    ///   and last task's.
    /// - **Crops: every frame the segment's tracker must see as the whole-clip tracker does**:
    ///   frame `o` when its smoothing window (±`smoothingRadius`) and the bridging look-around of
    ///   each frame in it (±`maxGap`), i.e. ±``FaceTracker/Parameters/latency`` frames, lie inside
    ///   the task's decoded frames or stop at the clip's own ends. The farm's 4 context frames
    ///   cover the smoothing window (±3) of every output frame, but not the bridging look-around:
    ///   nearer a segment's border, a detector miss in the window may be bridged (or not) from a
    ///   detection the segment never decoded, so such a frame may legitimately differ (the dataset
    ///   keeps the long run's crop); they are counted, not asserted. Detection does not depend on
    ///   where a segment starts: a search near the last box gives the full search's box for that
    ///   face (``FaceDetector``), which this test also relies on; following starts afresh at each
    ///   detector frame (index a multiple of ``FaceTracker/Parameters/redetectInterval``, at
    ///   most 3 frames into a task), so it matches the long run from there on.
    /// - Which frames have a face must agree on the same frames as the crops.
    @Test("crops and mel windows of speaker-c are bit-identical to the dub stage's model inputs")
    func cropsAndMelWindowsMatchTheDubStage() throws {
        let clip = media("speaker-c.mp4")
        let dir = temporaryDirectory("parity")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = ModelConfig.small
        let builder = DatasetBuilder(analyzer: Shared.analyzer, options: DatasetOptions(config: config))
        let index = try builder.build(inputs: [clip], into: dir, log: { _ in })
        let dataset = try readFrames(dir, index: index)

        // The farm's path.
        let farm = FarmConfiguration()
        let engine = DubEngine(model: try DubModel.untrained(config: config.name), analyzer: Shared.analyzer, logger: Logger(label: "parity"))
        let stage = DubStage(engine: engine)
        let indexed = try SourceIndexer.index(path: clip)
        let source = try SourceVideo(path: clip, codec: indexed.codec, index: indexed.index)
        let rate = indexed.info.frameRate, frameCount = indexed.index.frameCount
        #expect(index.clips.first?.frameRate == [rate.num, rate.den])
        let pcm = try DubAudio.decodePCM(path: clip)
        // Segments of 1.6 s: several interior borders in a 5 s clip.
        let spans = SegmentPlanner.plan(frameCount: frameCount, frameRate: rate, segmentSeconds: 1.6)
        #expect(spans.count >= 3)
        let latency = FaceTracker.Parameters().latency
        final class Seen { var inputs: [Int: ModelInputs] = [:] }
        var served: [Int: ModelInputs] = [:]
        var settled = Set<Int>()
        for span in spans {
            let (bundle, window) = try SegmentCutter.cut(source, frames: span.frames, context: farm.contextFrames)
            let d = window.decodedFrames
            let audio = AudioWindow.slice(pcm: pcm, range: SegmentPlanner.audioSamples(for: d, frameRate: rate,
                                                                                      marginSeconds: farm.audioMarginSeconds))
            let ctx = StageContext(task: TaskRef(segment: SegmentRef(job: JobID(1), index: span.index), token: .random()),
                                   outputFrames: span.frames, decodedFrames: d, frameRate: rate, audio: audio,
                                   sourceFace: nil, threads: 2)
            let processor = try #require(try stage.makeProcessor(for: ctx) as? DubProcessor)
            let seen = Seen()
            processor.modelInputsObserver = { seen.inputs[$0] = $1 }
            _ = try SegmentRenderer.render(input: bundle, window: window, outputFrames: span.frames, frameRate: rate,
                                           encoder: EncoderSettings(), layout: stage.layout, processor: processor, threads: 2)
            #expect(Set(seen.inputs.keys).isSubset(of: Set(span.frames)))
            served.merge(seen.inputs) { a, _ in a }
            for o in span.frames where (o - d.lowerBound >= latency || d.lowerBound == 0)
                && (d.upperBound - o > latency || d.upperBound == frameCount) {
                settled.insert(o)
            }
        }

        var melCompared = 0, cropCompared = 0, unsettledDiffering = 0
        for (f, inputs) in served {
            guard let stored = dataset[f] else {
                #expect(!settled.contains(f), "frame \(f): the dub stage found a face, the dataset has none")
                continue
            }
            #expect(stored.mel == inputs.melWindow, "frame \(f): mel window differs")
            melCompared += 1
            if settled.contains(f) {
                #expect(stored.crop == inputs.crop.pixels, "frame \(f): crop differs")
                cropCompared += 1
            } else if stored.crop != inputs.crop.pixels {
                unsettledDiffering += 1
            }
        }
        for f in settled where dataset[f] != nil {
            #expect(served[f] != nil, "frame \(f): the dataset has a face, the dub stage none")
        }
        print("parity: \(frameCount) frames, \(spans.count) segments (context \(farm.contextFrames)): "
              + "mel compared on \(melCompared), crops on \(cropCompared) settled frames, all identical; "
              + "\(unsettledDiffering) of \(melCompared - cropCompared) frames near segment borders differ")
        #expect(melCompared >= frameCount - 2, "speaker-c shows a face in nearly every frame")
        #expect(cropCompared >= frameCount / 2)
    }
}
