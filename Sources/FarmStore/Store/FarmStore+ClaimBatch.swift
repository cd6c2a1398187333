import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    /// One claim of ``claimSegments(_:leaseSeconds:)``: a worker, the token its lease gets, and
    /// what it can run (as ``claimSegment(worker:token:leaseSeconds:stage:model:)``).
    package struct ClaimRequest: Sendable {
        package var worker: String
        package var token: LeaseToken
        package var stage: String?
        package var model: String?
        package init(worker: String, token: LeaseToken = .random(), stage: String? = nil, model: String? = nil) {
            self.worker = worker
            self.token = token
            self.stage = stage
            self.model = model
        }
    }

    /// Leases a segment to each of `requests`, in order, as that many
    /// ``claimSegment(worker:token:leaseSeconds:stage:model:)`` calls would, but pipelined in one
    /// round trip and one commit: what the coordinator does when many workers are idle at once
    /// (a job starts, a fleet scales out). All or nothing: if one claim fails, none is made (the
    /// error is logged and every entry is `nil`). One entry per request, `nil` where nothing was
    /// claimable.
    package func claimSegments(_ requests: [ClaimRequest], leaseSeconds: Double) throws -> [ClaimedSegment?] {
        guard !requests.isEmpty else { return [] }
        let statements = requests.map {
            PostgresStatement(Self.claimSQL, claimParams(worker: $0.worker, token: $0.token, leaseSeconds: leaseSeconds,
                                                         stage: $0.stage, model: $0.model))
        }
        // One sync for the pipeline: the statements share one implicit transaction.
        let outcomes = try db().pipelineOutcomes(statements)
        var claimed: [ClaimedSegment?] = []
        for (request, outcome) in zip(requests, outcomes) {
            guard case .success(let rows)? = outcome else {
                if case .failure(let e)? = outcome {
                    logger.error("batched claim failed; nothing claimed", metadata: ["worker": "\(request.worker)", "error": "\(e.message)"])
                }
                return requests.map { _ in nil }
            }
            claimed.append(try rows.first.map { try decodeClaim($0, worker: request.worker, token: request.token) })
        }
        return claimed
    }
}
