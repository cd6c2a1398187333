import FarmTestSupport
import Foundation
import Testing
import DubfarmCore
import MediaPipeline

@Suite(.enabled(if: TestMedia.available, TestMedia.skipReason))
struct ProbeTests {
    @Test(arguments: [
        ("speaker-a.mp4", 135, Rational(30, 1), 700),
        ("speaker-b.mp4", 125, Rational(25, 1), 844),
        ("speaker-c.mp4", 125, Rational(25, 1), 590),
        ("speaker-long.mp4", 629, Rational(25, 1), 844),
    ])
    func probesVideo(file: String, frames: Int, fps: Rational, size: Int) throws {
        let info = try MediaProbe.probe(path: TestMedia.path(file))
        let v = try #require(info.video)
        #expect(v.frameCount == frames)
        #expect(v.frameRate == fps)
        #expect(v.width == size && v.height == size)
        #expect(v.codecName == "h264")
        #expect(v.pixelFormat == "yuv420p")
        #expect(v.rotation == 0)
        #expect(abs(v.duration - Double(frames) / fps.value) < 1e-9)
        #expect(info.formatName.contains("mp4"))
        let a = try #require(info.audio)
        #expect(a.codecName == "aac" && a.sampleRate == 44_100 && a.channels == 2)
    }

    @Test func containerLongerThanVideo() throws {
        let info = try MediaProbe.probe(path: TestMedia.path("speaker-a.mp4"))
        #expect(abs((info.containerDuration ?? 0) - 6.131) < 0.01)
        #expect(abs((info.video?.duration ?? 0) - 4.5) < 1e-9)
    }

    @Test(arguments: [("dub-1.wav", 44_100, 5.0155), ("dub-2.wav", 48_000, 5.0133), ("dub-long.wav", 48_000, 25.0)])
    func probesAudioOnly(file: String, rate: Int, seconds: Double) throws {
        let info = try MediaProbe.probe(path: TestMedia.path(file), requireVideo: false)
        #expect(info.video == nil)
        let a = try #require(info.audio)
        #expect(a.sampleRate == rate)
        #expect(abs((a.duration ?? 0) - seconds) < 0.01)
    }

    /// Expects `body` to throw a `DubfarmError` with `code` whose message names `file`.
    func expectError(_ code: DubfarmError.Code, naming file: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected an error for \(file)")
        } catch let e as DubfarmError {
            #expect(e.code == code, "\(e.message)")
            #expect(e.message.contains(file), "message does not name the file: \(e.message)")
        } catch {
            Issue.record("expected DubfarmError, got \(error)")
        }
    }

    @Test func badInputs() throws {
        let dir = try TestMedia.scratch("bad")
        defer { TestMedia.cleanup(dir) }
        let fm = FileManager.default
        var rng = SystemRandomNumberGenerator()
        let garbage = (0..<50_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        _ = fm.createFile(atPath: "\(dir)/garbage.mp4", contents: Data(garbage))
        _ = fm.createFile(atPath: "\(dir)/empty.mp4", contents: Data())
        let whole = try Data(contentsOf: URL(fileURLWithPath: TestMedia.path("speaker-b.mp4")))
        _ = fm.createFile(atPath: "\(dir)/truncated.mp4", contents: whole.prefix(whole.count * 4 / 10))

        expectError(.badInput, naming: "garbage.mp4") { _ = try MediaProbe.probe(path: "\(dir)/garbage.mp4") }
        expectError(.badInput, naming: "empty.mp4") { _ = try MediaProbe.probe(path: "\(dir)/empty.mp4") }
        expectError(.badInput, naming: "truncated.mp4") { _ = try MediaProbe.probe(path: "\(dir)/truncated.mp4") }
        expectError(.badInput, naming: "dub-1.wav") { _ = try MediaProbe.probe(path: TestMedia.path("dub-1.wav")) }
        expectError(.notFound, naming: "nowhere.mp4") { _ = try MediaProbe.probe(path: "\(dir)/nowhere.mp4") }
        expectError(.badInput, naming: "garbage.mp4") { _ = try SourceIndexer.index(path: "\(dir)/garbage.mp4") }
        expectError(.badInput, naming: "dub-1.wav") { _ = try SourceIndexer.index(path: TestMedia.path("dub-1.wav")) }
        expectError(.badInput, naming: "garbage.mp4") { _ = try DubAudio.decodePCM(path: "\(dir)/garbage.mp4") }
    }

    @Test func truncatedWithIndexAtStart() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("trunc")
        defer { TestMedia.cleanup(dir) }
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-b.mp4"), "-c", "copy", "-movflags", "+faststart", "\(dir)/fs.mp4"])
        let whole = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/fs.mp4"))
        _ = FileManager.default.createFile(atPath: "\(dir)/cut.mp4", contents: whole.prefix(whole.count / 2))
        expectError(.badInput, naming: "cut.mp4") { _ = try MediaProbe.probe(path: "\(dir)/cut.mp4") }
    }

    @Test func absurdAndUnsupported() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("absurd")
        defer { TestMedia.cleanup(dir) }
        // 9000x16 exceeds the 8192 pixel limit.
        try TestMedia.run(ffmpeg, ["-v", "error", "-f", "lavfi", "-i", "color=c=red:s=9000x16:d=0.2:r=5", "-c:v", "ffv1", "\(dir)/wide.mkv"])
        expectError(.badInput, naming: "wide.mkv") { _ = try MediaProbe.probe(path: "\(dir)/wide.mkv") }
    }
}
