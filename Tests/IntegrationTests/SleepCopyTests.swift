import DubfarmCore
import FarmProtocol
import Foundation
import LocalFarm
import Testing
@testable import Worker

/// A task as the coordinator cuts it: `frames` of an all-intra (or not) input, no context.
func sleepCopyTask(frames: Range<Int>, keyframes: Bool = true) -> TaskAssignment {
    let packets = frames.map { f in
        EncodedPacket(pts: Int64(f * 512), dts: Int64(f * 512), duration: 512, isKey: keyframes || f == frames.lowerBound, data: [UInt8(f & 0xff), 1, 2])
    }
    let codec = CodecParameters(codecName: "h264", width: 64, height: 64, pixelFormat: "yuv420p", timeBase: Rational(1, 12800),
                                frameRate: Rational(25, 1))
    return TaskAssignment(ref: TaskRef(segment: SegmentRef(job: JobID(1), index: 0), token: .random()), stage: "sleep-copy",
                          outputFrames: frames, decodedFrames: frames, framePTS: frames.map { Int64($0 * 512) },
                          frameRate: Rational(25, 1), encoder: EncoderSettings(), input: PacketBundle(codec: codec, packets: packets),
                          audio: AudioWindow(startSample: 0, samples: []))
}

extension Integration {
    @Suite("sleep-copy stage (scaling benchmark)", .serialized)
    struct SleepCopyTests {
        @Test("copies the output frames' packets, stamped with their frame index, without decoding")
        func copiesPackets() throws {
            let out = try SleepCopyStage.copyOutputPackets(sleepCopyTask(frames: 10..<13))
            #expect(out.packets.map(\.pts) == [10, 11, 12] && out.packets.map(\.dts) == [10, 11, 12])
            #expect(out.packets.map { $0.data[0] } == [10, 11, 12])
            #expect(out.codec.timeBase == Rational(1, 25))
        }

        @Test("refuses an input that is not all-intra, saying how to make one")
        func needsIntra() throws {
            #expect(throws: DubfarmError.self) { try SleepCopyStage.copyOutputPackets(sleepCopyTask(frames: 0..<3, keyframes: false)) }
            do { _ = try SleepCopyStage.copyOutputPackets(sleepCopyTask(frames: 0..<3, keyframes: false)) } catch let e as DubfarmError {
                #expect(e.message.contains("-g 1 -bf 0"))
            }
        }

        @Test("a farm of sleep-copy workers turns an all-intra clip into a stitched output with every frame",
              .enabled(if: haveMedia && FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg"), "needs ffmpeg and ../shared/media"))
        func endToEnd() async throws {
            let farm = try await TestFarm.start(workers: 0, settings: ["DUBFARM_SEGMENTS_SECONDS": "0.04",
                                                                      "DUBFARM_SEGMENTS_CONTEXT_FRAMES": "0"])
            defer { farm.shutdown() }
            let clip = farm.dir.appendingPathComponent("intra.mp4").path
            let made = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25",
                                                                  "-frames:v", "24", "-c:v", "libx264", "-g", "1", "-bf", "0",
                                                                  "-pix_fmt", "yuv420p", clip], timeout: 120)
            #expect(made.status == 0, "\(made.stderr)")
            for i in 1...3 { try farm.startWorker("c\(i)", stage: "sleep-copy", extra: ["--sleep-seconds", "0.05"]) }
            try farm.waitForWorkers(3, "3 workers", timeout: 60)
            let job = try farm.submit(clip, audio: media("dub-1.wav"), stage: "sleep-copy")
            let d = try farm.wait(job: job, timeout: 300)
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("c1", lines: 20))")
            #expect(d.segments.count == 24)
            #expect(ffprobeCounts(farm.output(job))?.frames == 24)
        }
    }
}
