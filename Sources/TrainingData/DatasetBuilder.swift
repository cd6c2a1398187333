import AudioFeatures
import Dubbing
import DubfarmCore
import FaceAnalysis
import Foundation
import MediaPipeline
import VQModel

/// How a dataset is built.
package struct DatasetOptions: Sendable {
    /// The model configuration the crops are for (its `imageSize`, `melBins`, `melFrames`).
    package var config: ModelConfig
    /// Frames per shard at most.
    package var shardFrames = 512
    /// Decode at most this many frames of each clip (quick checks); nil: all.
    package var maxFramesPerClip: Int?
    package var speakers = SpeakerMap()
    /// The tracker's parameters: the dub stage's (``DubEngine``'s default).
    package var trackerParameters = FaceTracker.Parameters()
    /// Seconds of audio beyond each end of the clip in the window its mel is computed from: the
    /// farm's default `segments.audio_margin`, so the first and last frames' mel windows see the
    /// same silence beyond the track that a worker's first and last segments see.
    package var audioMarginSeconds = 0.25

    package init(config: ModelConfig) { self.config = config }
}

/// What one clip gave.
package struct ClipReport: Sendable {
    package var clip: DatasetIndex.Clip
    /// Wall seconds spent on the clip.
    package var seconds: Double
}

/// Builds a `dubfarm-dataset/1` directory (docs/dataset.md) from talking-head videos with their
/// own audio, using the dub stage's own face tracking, alignment, crop and log-mel code
/// (``ModelInputs``), so a shard holds exactly what a worker feeds the model for each frame.
package final class DatasetBuilder {
    package let analyzer: FaceAnalyzer
    package let options: DatasetOptions

    package init(analyzer: FaceAnalyzer, options: DatasetOptions) {
        self.analyzer = analyzer
        self.options = options
    }

    /// Builds the dataset in `directory` (created if missing; a previous dataset there is
    /// replaced) from `inputs`, in order. Inputs that cannot be used (no audio track, not a
    /// readable video, a clip name already taken) are skipped with the reason passed to `log`
    /// and recorded in the index. `log` also gets one progress line per clip. Throws when no
    /// input gave a clip, or on an output error.
    @discardableResult
    package func build(inputs: [String], into directory: URL, log: (String) -> Void) throws -> DatasetIndex {
        guard options.shardFrames > 0 else { throw DubfarmError(.badInput, "shard size must be at least 1 frame") }
        try Self.prepare(directory)
        let c = options.config
        var index = DatasetIndex(format: DatasetIndex.format, config: c.name, imageSize: c.imageSize, melBins: c.melBins,
                                 melFrames: c.melFrames, clips: [], speakers: [], shards: [], skipped: [])
        let writer = ShardWriter(directory: directory, config: c.name, shardFrames: options.shardFrames)
        let t0 = Date()
        for (k, path) in inputs.enumerated() {
            let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            let prefix = "[\(k + 1)/\(inputs.count)] \(URL(fileURLWithPath: path).lastPathComponent)"
            func skip(_ reason: String) {
                // FFmpeg's messages start with the file's name, already on the line.
                let file = URL(fileURLWithPath: path).lastPathComponent + ": "
                log("\(prefix): skipped: \(reason.hasPrefix(file) ? String(reason.dropFirst(file.count)) : reason)")
                index.skipped.append(.init(source: path, reason: reason))
            }
            if index.clips.contains(where: { $0.name == name }) {
                skip("another input already gave a clip named '\(name)' (clip names are file stems)")
                continue
            }
            let speaker = options.speakers.speaker(of: name)
            let speakerID = index.speakers.firstIndex(of: speaker) ?? index.speakers.count
            let clipID = index.clips.count
            let shardsBefore = writer.shards.count
            do {
                let report = try clip(path: path, name: name, id: clipID, speaker: speaker, speakerID: speakerID,
                                      writer: writer, log: { log("\(prefix): \($0)") })
                if speakerID == index.speakers.count { index.speakers.append(speaker) }
                index.clips.append(report.clip)
                let r = report.clip
                log("\(prefix): \(r.frames) frames, \(r.framesWithFace) with a face (\(r.framesWithLandmarks) with landmarks), "
                    + "\(r.shards.count) shard\(r.shards.count == 1 ? "" : "s"), speaker \(speaker), "
                    + String(format: "%.1f s (%.1f frames/s)", report.seconds, Double(r.frames) / max(report.seconds, 1e-9)))
            } catch let e as ShardWriter.WriteFailed {
                throw e.error
            } catch let e as DubfarmError {
                writer.discard(from: shardsBefore)
                skip(e.message)
            } catch {
                writer.discard(from: shardsBefore)
                skip("\(error)")
            }
        }
        index.shards = writer.shards
        guard !index.clips.isEmpty else {
            throw DubfarmError(.badInput, "none of the \(inputs.count) input(s) gave a clip: "
                               + index.skipped.map { "\($0.source): \($0.reason)" }.joined(separator: "; "))
        }
        let url = directory.appendingPathComponent(DatasetIndex.fileName)
        do { try index.encoded().write(to: url, options: .atomic) } catch {
            throw DubfarmError(.io, "cannot write \(url.path): \(error.localizedDescription)")
        }
        let frames = index.shards.reduce(0) { $0 + $1.count }
        log("dataset: \(index.clips.count) clips, \(index.speakers.count) speakers, \(frames) frames in \(index.shards.count) shards, "
            + "\(index.skipped.count) input(s) skipped, " + String(format: "%.0f s", Date().timeIntervalSince(t0))
            + " -> \(directory.path)")
        return index
    }

    /// One clip into `writer`'s shards.
    func clip(path: String, name: String, id: Int, speaker: String, speakerID: Int, writer: ShardWriter,
              log: (String) -> Void) throws -> ClipReport {
        let t0 = Date()
        let info = try MediaProbe.probe(path: path)
        guard let video = info.video else { throw DubfarmError(.badInput, "no video stream") }
        guard info.audio != nil else {
            throw DubfarmError(.badInput, "no audio track (the trainer needs each clip's own speech)")
        }
        let rate = video.frameRate
        guard rate.num > 0, rate.den > 0 else { throw DubfarmError(.badInput, "no usable frame rate") }
        if video.isVariableFrameRate {
            log("warning: variable frame rate; frames are numbered at the nominal \(rate.num)/\(rate.den) fps as the farm does, "
                + "so their mel windows drift from the picture (\(video.frameCount) frames = "
                + String(format: "%.2f s at that rate, the audio is %.2f s)", video.duration, info.audio?.duration ?? 0))
        }
        let pcm = try DubAudio.decodePCM(path: path)
        let mel = ModelInputs.logMel(Self.audioWindow(pcm: pcm, frameCount: video.frameCount, frameRate: rate,
                                                      marginSeconds: options.audioMarginSeconds))
        let s = options.config.imageSize
        let tracker = FaceTracker(analyzer: analyzer, parameters: options.trackerParameters)
        writer.begin(clip: name, id: id, speakerID: speakerID)
        var withLandmarks = 0
        var lastReport = Date()
        func take(_ tracked: [TrackedFrame]) throws {
            for t in tracked {
                guard let face = t.face else { continue }
                let inputs = try ModelInputs.compute(frame: t.frame, face: face, cropSize: s, mel: mel, frameRate: rate)
                let landmarks = face.landmarks.map { Self.cropLandmarks($0, transform: inputs.transform) }
                if landmarks != nil { withLandmarks += 1 }
                try writer.add(frame: t.frame.index, inputs: inputs, landmarks: landmarks)
            }
        }
        struct Enough: Error {}
        var decoded = 0
        do {
            try VideoDecoder.decodeFrames(path: path, layout: .rgb24, threads: 1) { frame in
                if let m = options.maxFramesPerClip, decoded >= m { throw Enough() }
                decoded += 1
                try take(tracker.push(frame))
                if Date().timeIntervalSince(lastReport) >= 30 {
                    lastReport = Date()
                    log("\(decoded) of \(video.frameCount) frames")
                }
            }
        } catch is Enough {}
        try take(tracker.flush())
        let shards = try writer.end()
        let clip = DatasetIndex.Clip(id: id, name: name, speaker: speaker, source: path, frameRate: [rate.num, rate.den],
                                     variableFrameRate: video.isVariableFrameRate, width: video.width, height: video.height,
                                     frames: tracker.stats.frames, framesWithFace: tracker.stats.framesWithFace,
                                     framesWithLandmarks: withLandmarks,
                                     audioSeconds: Double(pcm.count) / Double(AudioWindow.sampleRate), shards: shards)
        return ClipReport(clip: clip, seconds: Date().timeIntervalSince(t0))
    }

    /// The whole clip as one audio window, with the margin a worker's task carries
    /// (``SegmentPlanner/audioSamples(for:frameRate:marginSeconds:)``); silence beyond the track.
    package static func audioWindow(pcm: [Float], frameCount: Int, frameRate: Rational, marginSeconds: Double) -> AudioWindow {
        AudioWindow.slice(pcm: pcm, range: SegmentPlanner.audioSamples(for: 0..<max(frameCount, 1), frameRate: frameRate,
                                                                       marginSeconds: marginSeconds))
    }

    /// Landmarks (frame pixel-index coordinates: pixel (x, y)'s centre is (x, y)) mapped into the
    /// crop's pixel-index coordinates through the crop → frame `transform`, as ``FaceWarp/crop``
    /// samples: crop pixel centre `q + ½` maps to frame point `p + ½`.
    package static func cropLandmarks(_ points: [Point2], transform: SimilarityTransform) -> [Point2] {
        let inv = transform.inverse
        return points.map { p in
            let q = inv.apply(Point2(p.x + 0.5, p.y + 0.5))
            return Point2(q.x - 0.5, q.y - 0.5)
        }
    }

    /// Creates `directory`, or clears a previous dataset there (its index and shards); refuses a
    /// non-empty directory that holds no dataset.
    static func prepare(_ directory: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: directory.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw DubfarmError(.badInput, "\(directory.path) exists and is not a directory") }
            let names = (try? fm.contentsOfDirectory(atPath: directory.path)) ?? []
            let ours = names.filter { $0 == DatasetIndex.fileName || ShardWriter.isShardName($0) }
            if ours.isEmpty, names.contains(where: { !$0.hasPrefix(".") }) {
                throw DubfarmError(.badInput, "\(directory.path) is not empty and holds no dataset; give an empty or new directory")
            }
            for n in ours {
                do { try fm.removeItem(at: directory.appendingPathComponent(n)) } catch {
                    throw DubfarmError(.io, "cannot remove the previous dataset's \(n) in \(directory.path): \(error.localizedDescription)")
                }
            }
        } else {
            do { try fm.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
                throw DubfarmError(.io, "cannot create \(directory.path): \(error.localizedDescription)")
            }
        }
    }
}

/// Collects frames of one clip at a time into shards of at most `shardFrames` frames and writes
/// each as safetensors when full (so memory holds one shard).
final class ShardWriter {
    let directory: URL
    let config: String
    let shardFrames: Int
    private(set) var shards: [DatasetIndex.Shard] = []

    private var clipName = ""
    private var clipID = 0
    private var speakerID = 0
    private var clipShards: [String] = []
    private var crops: [UInt8] = []
    private var mel: [Float] = []
    private var landmarks: [Float] = []
    private var hasLandmarks: [UInt8] = []
    private var frames: [Int32] = []
    private var transforms: [Float] = []
    private var size = 0, melCount = 0

    /// Landmarks per frame.
    static let landmarkCount = 68

    /// An output error: ends the build (input errors only skip a clip).
    struct WriteFailed: Error { let error: DubfarmError }

    init(directory: URL, config: String, shardFrames: Int) {
        self.directory = directory
        self.config = config
        self.shardFrames = shardFrames
    }

    static func shardName(_ k: Int) -> String {
        "shard-" + String(repeating: "0", count: max(0, 5 - String(k).count)) + String(k) + ".safetensors"
    }

    static func isShardName(_ n: String) -> Bool { n.hasPrefix("shard-") && n.hasSuffix(".safetensors") }

    func begin(clip name: String, id: Int, speakerID: Int) {
        clipName = name
        clipID = id
        self.speakerID = speakerID
        clipShards = []
        clearBuffers()
    }

    func add(frame index: Int, inputs: ModelInputs, landmarks lm: [Point2]?) throws {
        if frames.isEmpty {
            size = inputs.crop.size
            melCount = inputs.melWindow.count
        }
        precondition(inputs.crop.size == size && inputs.melWindow.count == melCount, "ShardWriter: inputs of one shard differ in size")
        crops += inputs.crop.pixels
        mel += inputs.melWindow
        if let lm, lm.count >= Self.landmarkCount {
            for p in lm.prefix(Self.landmarkCount) { landmarks += [Float(p.x), Float(p.y)] }
            hasLandmarks.append(1)
        } else {
            landmarks += [Float](repeating: 0, count: 2 * Self.landmarkCount)
            hasLandmarks.append(0)
        }
        frames.append(Int32(index))
        let t = inputs.transform
        transforms += [Float(t.a), Float(t.b), Float(t.tx), Float(t.ty)]
        if frames.count >= shardFrames { try flush() }
    }

    /// Writes the clip's last shard; returns the clip's shard files.
    func end() throws -> [String] {
        try flush()
        return clipShards
    }

    /// Removes shards from number `k` on (a clip that failed part way).
    func discard(from k: Int) {
        for s in shards[k...] { try? FileManager.default.removeItem(at: directory.appendingPathComponent(s.file)) }
        shards.removeSubrange(k...)
        clipShards = []
        clearBuffers()
    }

    private func clearBuffers() {
        crops.removeAll(keepingCapacity: true)
        mel.removeAll(keepingCapacity: true)
        landmarks.removeAll(keepingCapacity: true)
        hasLandmarks.removeAll(keepingCapacity: true)
        frames.removeAll(keepingCapacity: true)
        transforms.removeAll(keepingCapacity: true)
    }

    private func flush() throws {
        let n = frames.count
        guard n > 0 else { return }
        let file = Self.shardName(shards.count)
        let bins = MelSpectrogram.melBins
        let tensors: [(String, SafeTensors.RawTensor)] = [
            ("crops", .init(u8: crops, shape: [n, size, size, 3])),
            ("mel", .init(f32: mel, shape: [n, bins, melCount / bins])),
            ("landmarks", .init(f32: landmarks, shape: [n, Self.landmarkCount, 2])),
            ("hasLandmarks", .init(u8: hasLandmarks, shape: [n])),
            ("transform", .init(f32: transforms, shape: [n, 4])),
            ("frame", .init(i32: frames, shape: [n])),
            ("clip", .init(i32: [Int32](repeating: Int32(clipID), count: n), shape: [n])),
            ("speaker", .init(i32: [Int32](repeating: Int32(speakerID), count: n), shape: [n])),
        ]
        let url = directory.appendingPathComponent(file)
        do {
            try SafeTensors.write(raw: tensors, to: url, metadata: ["format": DatasetIndex.format, "config": config, "clip": clipName])
        } catch {
            throw WriteFailed(error: DubfarmError(.io, "\(error)"))
        }
        shards.append(.init(file: file, clip: clipID, count: n))
        clipShards.append(file)
        clearBuffers()
    }
}
