import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Testing

@Suite("Worker states in one statement")
struct WorkerStateBatchTests {
    @Test("setWorkerStates records state and segment of many workers, an event only for changed states, and skips unknown names")
    func batch() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(asyncSegmentCommits: true)
        for n in ["a", "b", "c"] { try await store.workerSeen(WorkerInfo(name: n, threads: 1)) }
        let before = try await store.events().count
        let seg = SegmentRef(job: JobID(7), index: 3)
        try await store.setWorkerStates([.init(name: "a", state: .busy, segment: seg), .init(name: "b", state: .idle, segment: nil),
                                         .init(name: "ghost", state: .busy, segment: nil)], actor: "test")
        let workers = Dictionary(uniqueKeysWithValues: try await store.workers().map { ($0.name, $0) })
        #expect(workers["a"]?.state == .busy && workers["a"]?.current == seg)
        #expect(workers["b"]?.state == .idle && workers["b"]?.current == nil)
        #expect(workers["ghost"] == nil)
        let events = try await store.events().dropFirst(before)
        #expect(events.count == 1, "only a changed state: \(events.map { "\($0.worker ?? "") \($0.from ?? "")→\($0.to ?? "")" })")
        #expect(events.first?.worker == "a" && events.first?.to == "busy")
        try await store.setWorkerStates([.init(name: "a", state: .busy, segment: SegmentRef(job: JobID(7), index: 4))])
        #expect(try await store.events().count == before + 1, "a new segment alone is not a state change")
        #expect(try await store.workers().first { $0.name == "a" }?.current?.index == 4)
    }
}
