import DubfarmCore
import DurableFiles
import FarmTestSupport
import Foundation
import Testing
import MediaPipeline

@Suite("Result log", .enabled(if: TestMedia.available, TestMedia.skipReason))
struct ResultLogTests {
    @Test("results appended side by side (and a superseded one) are stitched from their records: 629 frames; a wrong record is refused")
    func appendAndStitch() async throws {
        let dir = try TestMedia.scratch("result-log")
        defer { TestMedia.cleanup(dir) }
        let (_, bundles, info) = try RenderStitchTests().renderAll("speaker-long.mp4", segmentFrames: 250, into: dir)
        let path = "\(dir)/results.dfrl"
        let log = try ResultLog(path: path)
        let tokens = bundles.map { _ in LeaseToken.random() }
        // A superseded lease's result for segment 1 lands in the log too; it is never referenced.
        let ghost = try log.append(bundles[1], segment: 1, token: .random())
        // The three results written at once, from three threads, in reverse order.
        let records = try await withThrowingTaskGroup(of: ResultRecord.self) { group in
            for i in bundles.indices.reversed() {
                group.addTask { try log.append(bundles[i], segment: i, token: tokens[i]) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }.sorted { $0.segment < $1.segment }
        #expect(records.map(\.segment) == [0, 1, 2])
        #expect(records.map(\.token) == tokens)
        // Records do not overlap, and the file holds exactly them.
        let spans = (records + [ghost]).map { $0.offset..<($0.offset + $0.length) }.sorted { $0.lowerBound < $1.lowerBound }
        for (a, b) in zip(spans, spans.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
        #expect(spans.first?.lowerBound == 0)
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(Int64(size) == spans.last?.upperBound)

        let output = "\(dir)/out.mp4"
        let report = try Stitcher.stitch(StitchRequest(segments: records.map { StitchSegment(path: path, record: $0) },
                                                       audioPath: TestMedia.path("dub-long.wav"), outputPath: output,
                                                       expectedFrameCount: info.frameCount, frameRate: info.frameRate))
        #expect(report.framesWritten == 629)
        #expect(try MediaProbe.probe(path: output).video?.frameCount == 629)

        // A record that is not the one asked for (another lease, another segment, past the end)
        // fails the stitch naming the log, and leaves no output.
        var wrongToken = records[1]
        wrongToken.token = .random()
        var wrongSegment = records[2]
        wrongSegment.segment = 7
        var pastEnd = records[2]
        pastEnd.length += 1
        for bad in [wrongToken, wrongSegment, pastEnd] {
            var parts = records.map { StitchSegment(path: path, record: $0) }
            parts[min(bad.segment, 2)] = StitchSegment(path: path, record: bad)
            let out = "\(dir)/bad.mp4"
            #expect {
                try Stitcher.stitch(StitchRequest(segments: parts, audioPath: nil, outputPath: out,
                                                  expectedFrameCount: info.frameCount, frameRate: info.frameRate))
            } throws: { e in
                (e as? DubfarmError)?.code == .stitch && (e as? DubfarmError)?.message.contains("results.dfrl") == true
            }
            #expect(!FileManager.default.fileExists(atPath: out))
        }

        // Opened again (a coordinator restarted), the log appends after what it holds.
        let again = try ResultLog(path: path)
        let next = try again.append(bundles[0], segment: 0, token: .random())
        #expect(next.offset == Int64(size))
    }
}
