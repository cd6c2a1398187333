import Testing
import Foundation
@testable import DubfarmCore

@Suite("Personalisation state machine")
struct PersonalisationMachineTests {
    @Test("preparing → pending → leased → done under the lease's token")
    func happyPath() throws {
        var m = PersonalisationMachine()
        let t = LeaseToken.random()
        #expect(throws: PersonalisationMachine.Rejection.wrongState(.preparing)) { try m.lease(token: t, to: "w1") }
        try m.prepared()
        try m.lease(token: t, to: "w1")
        #expect(m.state == .leased && m.leasedBy == "w1" && m.leases == 1)
        try m.checkpoint(token: t, step: 40)
        try m.complete(token: t)
        #expect(m.state == .done && m.lease == nil && m.checkpointStep == 40)
    }

    @Test("fencing: checkpoints, results and failures of a superseded lease change nothing")
    func fencing() throws {
        var m = PersonalisationMachine(state: .pending)
        let old = LeaseToken.random(), new = LeaseToken.random()
        try m.lease(token: old, to: "w1")
        try m.checkpoint(token: old, step: 10)
        try m.release(token: nil)            // w1 lost: no failure counted, the checkpoint kept
        #expect(m.state == .pending && m.failures == 0 && m.checkpointStep == 10)
        try m.lease(token: new, to: "w2")
        let before = m
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.checkpoint(token: old, step: 99) }
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.complete(token: old) }
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.fail(token: old, maxAttempts: 3) }
        #expect(m == before)
        #expect(m.leases == 2)
    }

    @Test("a checkpoint older than the kept one is refused")
    func olderCheckpoint() throws {
        var m = PersonalisationMachine(state: .pending)
        let t = LeaseToken.random()
        try m.lease(token: t, to: "w1")
        try m.checkpoint(token: t, step: 30)
        #expect(throws: PersonalisationMachine.Rejection.olderCheckpoint(kept: 30, offered: 20)) { try m.checkpoint(token: t, step: 20) }
        #expect(m.checkpointStep == 30)
    }

    @Test("failed attempts retry, then the job fails, or runs on the default weights when it asked to")
    func failures() throws {
        for fallback in [false, true] {
            var m = PersonalisationMachine(state: .pending, fallback: fallback)
            var outcomes: [PersonalisationMachine.FailureOutcome] = []
            for _ in 0..<3 {
                let t = LeaseToken.random()
                try m.lease(token: t, to: "w")
                outcomes.append(try m.fail(token: t, maxAttempts: 3))
            }
            #expect(outcomes == [.retry, .retry, fallback ? .fallBackToDefaultWeights : .failJob])
            #expect(m.state == .failed && m.failures == 3)
        }
    }

    @Test("unusable footage ends it at once")
    func permanent() throws {
        var m = PersonalisationMachine(state: .pending)
        let t = LeaseToken.random()
        try m.lease(token: t, to: "w")
        #expect(try m.fail(token: t, maxAttempts: 3, permanent: true) == .failJob)
        var p = PersonalisationMachine(fallback: true)
        #expect(p.giveUp() == .fallBackToDefaultWeights && p.state == .failed)
    }

    @Test("the job's options carry the request; 0 means none; nonsense is refused")
    func request() throws {
        var options: [String: String] = [:]
        PersonaliseRequest(seconds: 120, fallback: true).store(in: &options)
        #expect(try PersonaliseRequest(options: options) == PersonaliseRequest(seconds: 120, fallback: true))
        #expect(try PersonaliseRequest(options: [:]) == nil)
        #expect(try PersonaliseRequest(options: ["personalise": "0"]) == nil)
        #expect(throws: DubfarmError.self) { try PersonaliseRequest(options: ["personalise": "-5"]) }
        #expect(throws: DubfarmError.self) { try PersonaliseRequest(options: ["personalise": "soon"]) }
        // Data-parallel: the number of workers travels too; one worker is written as nothing.
        var parallel: [String: String] = [:]
        PersonaliseRequest(seconds: 60, workers: 4).store(in: &parallel)
        #expect(parallel["personalise.workers"] == "4")
        #expect(try PersonaliseRequest(options: parallel)?.workers == 4)
        #expect(options["personalise.workers"] == nil)
        for bad in ["0", "65", "many"] {
            #expect(throws: DubfarmError.self) { try PersonaliseRequest(options: ["personalise": "60", "personalise.workers": bad]) }
        }
        // A request from a client that does not know about workers decodes as one.
        let old = try JSONDecoder().decode(PersonaliseRequest.self, from: Data(#"{"seconds":30,"fallback":false}"#.utf8))
        #expect(old == PersonaliseRequest(seconds: 30))
    }

    @Test("jobs go planning → personalising → running")
    func jobStates() {
        #expect(JobState.planning.canTransition(to: .personalising))
        #expect(JobState.personalising.canTransition(to: .running))
        #expect(JobState.personalising.canTransition(to: .failed) && JobState.personalising.canTransition(to: .cancelled))
        #expect(!JobState.personalising.canTransition(to: .stitching) && !JobState.queued.canTransition(to: .personalising))
    }
}

@Suite("Where a fine-tune runs")
struct PersonalisationPlacementTests {
    typealias W = PersonalisationPlacement.Worker

    @Test("a CPU worker leaves the fine-tune to an idle GPU worker; a GPU worker, or a CPU one beside busy GPUs, takes it")
    func gpuFirst() {
        let cpu = W(name: "c1"), gpu = W(name: "g1", device: "cuda")
        #expect(PersonalisationPlacement.defers(cpu, to: [gpu, W(name: "c2")]))
        #expect(!PersonalisationPlacement.defers(cpu, to: [W(name: "g1", device: "cuda", idle: false), W(name: "c2")]))
        #expect(!PersonalisationPlacement.defers(gpu, to: [W(name: "g2", device: "cuda"), cpu]))
        #expect(!PersonalisationPlacement.defers(cpu, to: []))
        let order = PersonalisationPlacement.claimOrder([W(name: "c2"), W(name: "g2", device: "cuda"), cpu, gpu]).map(\.name)
        #expect(order == ["g1", "g2", "c1", "c2"])
    }

    @Test("the gang: idle workers on the lead's device, in order, at most workers − 1; none when the lead hosts no rendezvous")
    func members() {
        let lead = W(name: "a", rendezvous: "10.0.0.1:29500")
        let others = [W(name: "a"), W(name: "b"), W(name: "c", idle: false), W(name: "d", device: "cuda"), W(name: "e"), W(name: "f")]
        #expect(PersonalisationPlacement.members(for: lead, from: others, want: 3).map(\.name) == ["b", "e"])
        #expect(PersonalisationPlacement.members(for: lead, from: others, want: 10).map(\.name) == ["b", "e", "f"])
        #expect(PersonalisationPlacement.members(for: lead, from: others, want: 1).isEmpty)
        #expect(PersonalisationPlacement.members(for: W(name: "a"), from: others, want: 3).isEmpty)
        let gpuLead = W(name: "g", device: "cuda", rendezvous: "10.0.0.2:29500")
        #expect(PersonalisationPlacement.members(for: gpuLead, from: others, want: 4).map(\.name) == ["d"])
    }
}
