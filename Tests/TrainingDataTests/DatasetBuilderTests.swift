import DubfarmCore
import FaceAnalysis
import Foundation
import Testing
import VQModel
@testable import TrainingData

@Suite("Dataset builder", .serialized, .enabled(if: haveMedia, "needs ../shared/media and the face models"))
struct DatasetBuilderTests {
    /// speaker-c without its audio track, made with FFmpeg's command line tool (nil where it is absent).
    static func silentCopy(in dir: URL) -> String? {
        let out = dir.appendingPathComponent("mute-clip.mp4").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        p.arguments = ["-v", "error", "-y", "-i", media("speaker-c.mp4"), "-an", "-c:v", "copy", "-frames:v", "20", out]
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
    }

    @Test("index and shards as docs/dataset.md says: dtypes, shapes, frame order, ids; unusable inputs skipped with the reason; a rebuild replaces the old dataset")
    func format() throws {
        let dir = temporaryDirectory("dataset")
        let work = temporaryDirectory("dataset-inputs")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir); try? FileManager.default.removeItem(at: work) }
        let notes = work.appendingPathComponent("notes.txt")
        try Data("not a video\n".utf8).write(to: notes)
        let mute = Self.silentCopy(in: work)
        var options = DatasetOptions(config: .small)
        options.shardFrames = 16
        options.maxFramesPerClip = 40
        options.speakers = SpeakerMap(["speaker-c": "person-c"])
        let builder = DatasetBuilder(analyzer: Shared.analyzer, options: options)
        var lines: [String] = []
        let inputs = [media("speaker-c.mp4"), notes.path] + (mute.map { [$0] } ?? []) + [media("speaker-b.mp4")]
        let index = try builder.build(inputs: inputs, into: dir) { lines.append($0) }

        #expect(index.format == "dubfarm-dataset/1" && index.config == "small" && index.imageSize == 128)
        #expect(index.melBins == 80 && index.melFrames == 16)
        #expect(index.clips.map(\.name) == ["speaker-c", "speaker-b"])
        #expect(index.clips.map(\.id) == [0, 1])
        #expect(index.speakers == ["person-c", "speaker-b"])
        #expect(index.clips.map(\.frames) == [40, 40])
        #expect(index.clips.allSatisfy { $0.width > 0 && $0.height > 0 })
        #expect(index.clips.allSatisfy { !$0.variableFrameRate })
        #expect(index.skipped.count == (mute == nil ? 1 : 2))
        #expect(index.skipped.first { $0.source == notes.path } != nil)
        if let mute {
            let s = try #require(index.skipped.first { $0.source == mute })
            #expect(s.reason.contains("no audio track"), "\(s.reason)")
            #expect(lines.contains { $0.contains("mute-clip.mp4") && $0.contains("skipped") && $0.contains("no audio") })
        }
        #expect(lines.contains { $0.contains("speaker-c.mp4") && $0.contains("40 frames") })
        let reread = try DatasetIndex.load(directory: dir)
        #expect(reread == index)

        for clip in index.clips {
            let shards = index.shards.filter { $0.clip == clip.id }
            #expect(shards.map(\.file) == clip.shards)
            #expect(shards.reduce(0) { $0 + $1.count } == clip.framesWithFace)
            #expect(shards.allSatisfy { $0.count <= 16 })
            #expect(clip.framesWithFace >= 38, "speaker-c and speaker-b show a face in nearly every frame")
            var lastFrame: Int32 = -1
            for shard in shards {
                let (t, meta) = try SafeTensors.readRaw(dir.appendingPathComponent(shard.file))
                let n = shard.count
                #expect(meta == ["format": "dubfarm-dataset/1", "config": "small", "clip": clip.name])
                #expect(Set(t.keys) == ["crops", "mel", "landmarks", "hasLandmarks", "transform", "frame", "clip", "speaker"])
                #expect(t["transform"]?.dtype == .f32 && t["transform"]?.shape == [n, 4])
                #expect(t["crops"]?.dtype == .u8 && t["crops"]?.shape == [n, 128, 128, 3])
                #expect(t["mel"]?.dtype == .f32 && t["mel"]?.shape == [n, 80, 16])
                #expect(t["landmarks"]?.dtype == .f32 && t["landmarks"]?.shape == [n, 68, 2])
                #expect(t["hasLandmarks"]?.dtype == .u8 && t["hasLandmarks"]?.shape == [n])
                for k in ["frame", "clip", "speaker"] { #expect(t[k]?.dtype == .i32 && t[k]?.shape == [n]) }
                let frames = try #require(t["frame"]?.i32)
                #expect(frames.first! > lastFrame && zip(frames, frames.dropFirst()).allSatisfy { $0 < $1 })
                lastFrame = frames.last!
                #expect(t["clip"]?.i32 == [Int32](repeating: Int32(clip.id), count: n))
                #expect(t["speaker"]?.i32 == [Int32](repeating: Int32(index.speakers.firstIndex(of: clip.speaker)!), count: n))
                let mel = try #require(t["mel"]).floats
                #expect(mel.allSatisfy { $0 >= -4 && $0 <= 4 })
                // Landmarks lie in the crop (the FFHQ square holds the whole face).
                let lm = try #require(t["landmarks"]).floats, has = try #require(t["hasLandmarks"]?.u8)
                for i in 0..<n where has[i] == 1 {
                    let pts = lm[(i * 136)..<((i + 1) * 136)]
                    #expect(pts.allSatisfy { $0 > -1 && $0 < 128 }, "frame \(frames[i]): landmarks outside the crop")
                }
            }
        }

        // Built again into the same directory: the old shards are gone, not mixed in.
        options.shardFrames = 64
        let again = try DatasetBuilder(analyzer: Shared.analyzer, options: options).build(inputs: [media("speaker-c.mp4")], into: dir) { _ in }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(files == ["index.json"] + again.shards.map(\.file))
        #expect(again.shards.count == 1)
    }

    @Test("a directory holding something other than a dataset is refused; no usable input is an error naming each")
    func refusals() throws {
        let dir = temporaryDirectory("dataset-busy")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("x".utf8).write(to: dir.appendingPathComponent("thesis.tex"))
        let builder = DatasetBuilder(analyzer: Shared.analyzer, options: DatasetOptions(config: .tiny))
        #expect { try builder.build(inputs: [media("speaker-c.mp4")], into: dir) { _ in } } throws: {
            ($0 as? DubfarmError)?.message.contains("not empty") == true
        }
        let empty = temporaryDirectory("dataset-none")
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect { try builder.build(inputs: [dir.appendingPathComponent("thesis.tex").path, "/nonexistent/clip.mp4"], into: empty) { _ in } } throws: {
            guard let e = $0 as? DubfarmError else { return false }
            return e.code == .badInput && e.message.contains("thesis.tex") && e.message.contains("clip.mp4")
        }
    }

    @Test("landmarks map into crop pixel-index coordinates the way FaceWarp.crop samples")
    func landmarkMapping() throws {
        let t = FaceAlignment(center: Point2(200, 150), halfSide: 80, angle: 0.3).transform(cropSize: 128)
        for q in [Point2(0, 0), Point2(64, 64), Point2(10.25, 100.5), Point2(127, 3)] {
            // FaceWarp.crop reads crop pixel q at frame pixel-index position t(q + ½) − ½.
            let f = t.apply(Point2(q.x + 0.5, q.y + 0.5))
            let back = DatasetBuilder.cropLandmarks([Point2(f.x - 0.5, f.y - 0.5)], transform: t)[0]
            #expect(abs(back.x - q.x) < 1e-9 && abs(back.y - q.y) < 1e-9)
        }
    }
}
