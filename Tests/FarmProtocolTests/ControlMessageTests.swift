import DubfarmCore
import Foundation
import Testing
@testable import FarmProtocol

@Suite("Control protocol codec")
struct ControlMessageTests {
    static let requests: [ControlRequest] = [
        .hello, .uploadBegin(UploadBegin(name: "talk.mp4", size: 123_456, sha256: String(repeating: "ab", count: 32))),
        .uploadChunk(id: "u1", offset: 1 << 20, data: [1, 2, 3, 4]), .uploadEnd(id: "u1"),
        .submit(SubmitSpec(video: "u1", audio: "u2", face: "u3", priority: 5, stage: "passthrough")),
        .status(job: 4), .jobs(JobsQuery(state: .running, limit: 10)), .jobs(JobsQuery()), .workers,
        .cancel(job: 9), .retry(job: 9), .fetch(FetchRequest(job: 3, offset: 0, length: 1 << 20)),
        .events(EventsQuery(job: 3, after: 17, limit: 50)), .events(EventsQuery(job: nil)),
        .submit(SubmitSpec(video: "u1", audio: "u2", name: "pilot (es)", labels: ["lang": "es", "show": "pilot"])),
        .jobs(JobsQuery(state: nil, limit: 5, labels: ["lang": "es"], name: "pilot (es)")),
        .setPriority(PriorityChange(job: 4, priority: -3)), .gc(GCRequest(olderThanSeconds: 86_400, dryRun: true)),
    ]

    @Test("every request survives a round trip", arguments: requests)
    func roundTrip(request: ControlRequest) throws {
        let (id, decoded) = try ControlRequest.decode(request.encode(requestID: 0xfeed_beef))
        #expect(id == 0xfeed_beef)
        #expect(decoded == request)
    }

    @Test("replies carry values, payloads and errors")
    func replies() throws {
        let ok = ControlReply.ok(5, FetchChunk(total: 10, offset: 0, sha256: "x"), payload: [1, 2])
        let back = try ControlReply.decode(ok.encode())
        #expect(back.requestID == 5)
        #expect(try back.value(FetchChunk.self) == FetchChunk(total: 10, offset: 0, sha256: "x"))
        #expect(back.payload == [1, 2])

        let err = ControlReply.error(6, DubfarmError(.notFound, "job 12 does not exist"))
        let e = try ControlReply.decode(err.encode())
        #expect(throws: DubfarmError(.notFound, "job 12 does not exist")) { try e.value(JobView.self) }
    }

    @Test("malformed requests are rejected")
    func malformed() {
        let good = ControlRequest.status(job: 1).encode(requestID: 1)
        var shortID = good
        shortID[1] = [1, 2]
        var badJSON = good
        badJSON[3] = Array("{\"job\": \"one\"}".utf8)
        let cases: [[[UInt8]]] = [
            [], [good[0]], shortID, badJSON,
            [good[0], good[1], Array("STATUS".utf8), good[3], [1]],
            [Array("HTTP/1.1".utf8), good[1], good[2], good[3]],
            [good[0], good[1], Array("UPLOAD-CHUNK".utf8), Array("{\"id\":\"x\",\"offset\":0}".utf8)],
        ]
        for c in cases {
            #expect(throws: DubfarmError.self) { try ControlRequest.decode(c) }
        }
    }

    @Test("views encode as documented JSON")
    func jobViewJSON() throws {
        var v = JobView(id: 1, state: .running, priority: 0, createdAt: Date(timeIntervalSince1970: 0),
                        updatedAt: Date(timeIntervalSince1970: 1), video: "a.mp4", audio: "a.wav", face: nil, stage: "dub")
        v.frames = 629
        v.framesDone = 250
        let json = String(decoding: try JSONEncoder().encode(v), as: UTF8.self)
        #expect(json.contains("\"state\":\"running\""))
        #expect(abs(v.progress - 250.0 / 629.0) < 1e-9)
    }
}
