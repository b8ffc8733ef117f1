import Crypto
import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import X509

/// The controller's shell: owns the `Membership` instance, the token registry and the open
/// connections, feeds them every event and carries out the directives they return.
actor ControllerState {
    struct Connection {
        let outbox: AsyncStream<Outbound>.Continuation
        let peer: PeerIdentity
        let remoteAddress: String
        /// Set once a node's hello was welcomed.
        var incarnation: Generation?
        var closing = false
    }

    private var membership: Membership
    private var tokens: TokenStore
    private let authority: CertificateAuthority
    private let events: EventLog
    private let logger: Logger
    private let nodeCertificateLifetime: TimeInterval
    private let startedAt = MonotonicClock.now()
    private var connections: [Int: Connection] = [:]
    /// The connection that carries each live member's incarnation.
    private var sessions: [NodeID: Int] = [:]
    private var nextConnectionID = 0
    /// Where each node last joined from and what it offered, for status rows of departed nodes.
    private var lastSeen: [NodeID: (address: String, capacity: Capacity)] = [:]
    private(set) var isShuttingDown = false
    private var training: ControllerTraining?
    /// Where each member's data plane listens, from its hello.
    private var dataAddresses: [NodeID: String] = [:]
    private let ledgerFile: LedgerFile
    /// Members that left gracefully while holding state that a new slot may need: their
    /// connection stays open (without membership) until the plan that copies from them is
    /// ready, or `handOffTimeout` passes.
    private var departing: [NodeID: (connection: Int, since: Timestamp)] = [:]
    /// Failed bootstraps per source address: a flood is refused unheard.
    private var bootstrapFailures = FailureLimiter()
    private var lastSuppressedReport = Timestamp.zero
    private let handOffTimeout: Duration = .seconds(30)
    private let baseDirectory: URL
    /// The durable state: every change is recorded here before it is acted on.
    private let journal: ControllerJournal
    /// After a restart, training waits until every member the journal listed has resumed (or
    /// was declared dead), so that the first plan keeps every holder on its layers.
    private var awaitingRecovery: Bool

    init(membership: Membership, tokens: TokenStore, authority: CertificateAuthority, events: EventLog, ledger: LedgerFile, journal: ControllerJournal, training: ControllerTraining?, baseDirectory: URL, nodeCertificateLifetime: TimeInterval, logger: Logger) {
        self.membership = membership
        self.journal = journal
        self.awaitingRecovery = !membership.awaitingRecovery.isEmpty
        self.tokens = tokens
        self.authority = authority
        self.events = events
        self.ledgerFile = ledger
        self.training = training
        self.baseDirectory = baseDirectory
        self.nodeCertificateLifetime = nodeCertificateLifetime
        self.logger = logger
    }

    // MARK: - Connections

    func register(peer: PeerIdentity, remoteAddress: String, outbox: AsyncStream<Outbound>.Continuation) -> Int {
        nextConnectionID += 1
        connections[nextConnectionID] = Connection(outbox: outbox, peer: peer, remoteAddress: remoteAddress)
        if let serial = peer.certificateSerial, let revocation = journal.state.revoked[serial] {
            logger.warning("refused \(peer.name ?? "?") from \(remoteAddress): its certificate (serial \(serial)) was revoked: \(revocation.reason)")
            refuse(nextConnectionID, Refused(.certificateRevoked, "this certificate was revoked (\(revocation.reason)); join again with a new token (elastic token create) and a fresh --data-dir"))
        } else if isShuttingDown {
            refuse(nextConnectionID, Refused(.shuttingDown, "the controller is shutting down; retry shortly"))
        }
        return nextConnectionID
    }

    func disconnected(_ id: Int) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        connection.outbox.finish()
        if let (node, _) = departing.first(where: { $0.value.connection == id }) {
            departing[node] = nil
            if training?.coordinator.transferSources.contains(node) == true {
                logger.warning("\(node) left before it handed off its state; re-planning")
                apply(membership.onNewGeneration(reason: "\(node) left before it handed off its state"), requester: nil)
            }
            return
        }
        guard let name = connection.peer.name, let incarnation = connection.incarnation,
              sessions[NodeID(name)] == id else { return }
        sessions[NodeID(name)] = nil
        apply(membership.onDisconnect(node: NodeID(name), incarnation: incarnation, now: MonotonicClock.now()), requester: nil)
    }

    func receive(_ id: Int, frame: Frame) {
        guard let connection = connections[id], !connection.closing else { return }
        let message: ControlMessage
        do {
            message = try ControlMessage(frame: frame)
        } catch {
            logger.warning("malformed message from \(connection.remoteAddress): \(error)")
            refuse(id, Refused(.protocolError, "malformed message: \(error.message)"))
            return
        }
        let now = MonotonicClock.now()
        if let name = connection.peer.name, departing[NodeID(name)]?.connection == id {
            // A member that left and waits to hand off: its state is served over the data
            // plane; what it says about steps of the plan it left no longer counts.
            logger.debug("\(name) is leaving; ignored its \(message.kind)")
            return
        }
        switch (connection.peer.role, message) {
        case (nil, .caRequest):
            send(id, .caBundle(certificateDER: authority.certificate.derBytes))
        case (nil, .bootstrapRequest(let request)):
            bootstrap(id, request)
        case (nil, _):
            refuse(id, Refused(.certificateRequired, "this request needs a client certificate from the cluster CA; join with 'elastic join HOST:PORT --token T --ca-hash H' first"))
        case (.node?, .hello(let hello)):
            let node = NodeID(connection.peer.name ?? "")
            dataAddresses[node] = hello.dataAddress
            var resuming = hello.resuming
            if let recorded = journal.state.members[node.value], recorded.incarnation == resuming?.value,
               recorded.certificateSerial != connection.peer.certificateSerial ?? "" {
                // Same name, another certificate: not the member the journal knows.
                logger.warning("\(node) asks to resume incarnation \(recorded.incarnation) with another certificate (serial \(connection.peer.certificateSerial ?? "?"), the journal has \(recorded.certificateSerial)); it joins as a new member")
                resuming = nil
            }
            apply(membership.onJoin(node: node, address: connection.remoteAddress, capacity: hello.capacity, resuming: resuming, now: now), requester: id)
        case (.node?, .heartbeat(let incarnation)):
            apply(membership.onHeartbeat(node: NodeID(connection.peer.name ?? ""), incarnation: incarnation, generation: frame.generation, now: now), requester: id)
        case (.node?, .leave(let incarnation)):
            apply(membership.onLeave(node: NodeID(connection.peer.name ?? ""), incarnation: incarnation, generation: frame.generation, now: now), requester: id)
        case (.node?, .ready):
            logger.debug("\(connection.peer.name ?? "?") is ready for generation \(frame.generation)")
            trainingDirectives { $0.onReady(node: NodeID(connection.peer.name ?? ""), generation: frame.generation) }
        case (.node?, .stepDone(let report)):
            let node = NodeID(connection.peer.name ?? "")
            // A fenced incarnation's report is refused; an older generation's is ignored by the
            // coordinator, which checks the plan's generation.
            if let refusal = membership.admission(node: node, incarnation: connection.incarnation ?? .zero, generation: frame.generation),
               case .fenced = refusal {
                refuse(id, refused(refusal))
                return
            }
            training?.traffic[node] = TrainingStatus.Traffic(node: node, bytesSent: report.bytesSent, bytesReceived: report.bytesReceived, uncompressedBytes: report.uncompressedBytes)
            if let traffic = training?.traffic[node] { training?.trafficTotal.add(traffic) }
            trainingDirectives {
                $0.onStepDone(node: node, step: Int(report.step), generation: frame.generation, report: .init(lossSum: report.lossSum, samples: Int(report.samples), stateChecksum: report.stateChecksum), now: now)
            }
        case (.node?, .stepAbandoned(let step, let reason)):
            logger.warning("\(connection.peer.name ?? "?") abandoned step \(step): \(reason)")
            trainingDirectives { $0.onStepAbandoned(node: NodeID(connection.peer.name ?? ""), generation: frame.generation, reason: reason) }
        case (.node?, .checkpointWritten(let report)):
            let node = NodeID(connection.peer.name ?? "")
            checkpointDecision {
                $0.onWritten(node: node, step: Int(report.step), stage: Int(report.stage), error: report.error.isEmpty ? nil : report.error,
                             rawBytes: report.rawBytes, storedBytes: report.storedBytes)
            }
        case (.node?, .trainingFailed(let reason)):
            logger.error("\(connection.peer.name ?? "?") cannot train: \(reason)")
            trainingDirectives { $0.onFailure(node: NodeID(connection.peer.name ?? ""), generation: frame.generation, reason: reason) }
        case (.admin?, .submitJob(let json)):
            submitJob(id, json)
        case (.admin?, .statusRequest):
            send(id, .statusReply(status(now: now)))
        case (.admin?, .tokenCreate(let request)):
            createToken(id, request)
        case (.admin?, .tokenListRequest):
            send(id, .tokenList(tokens.registry.sorted.map {
                TokenInfo(id: $0.id, createdAt: $0.createdAt, expiresAt: $0.expiresAt, usesLeft: $0.usesLeft, uses: $0.uses, description: $0.description)
            }))
        case (.admin?, .tokenRevoke(let tokenID)):
            revokeToken(id, tokenID)
        case (.admin?, .nodeRevoke(let name)):
            revokeNode(id, NodeID(name))
        default:
            refuse(id, Refused(.notAuthorized, "a \(connection.peer.role?.rawValue ?? "anonymous") certificate may not send \(message.kind)"))
        }
    }

    // MARK: - Time

    /// Advances the failure detector; returns how long to wait before the next tick.
    func tick() -> Duration {
        let now = MonotonicClock.now()
        let directives = membership.onTick(now: now)
        apply(directives, requester: nil)
        trainingDirectives { $0.onTick(now: now) }
        reportSuppressedBootstraps(now: now)
        endExpiredSessions(at: Date())
        for (node, entry) in departing where now.since(entry.since) > handOffTimeout {
            logger.warning("\(node) did not hand off its state within \(handOffTimeout.shortDescription); letting it go")
            release(node)
        }
        var wait = membership.settings.maxTickInterval
        for case .scheduleTick(let after) in directives { wait = after }
        return wait
    }

    /// The controller did not run for a while (found by the membership's tick): the other
    /// timers, like the members' deadlines, do not count that time either.
    private func forgivePause(_ forgiven: Duration) {
        training?.coordinator.onPause(forgiven: forgiven)
        let now = MonotonicClock.now()
        for (node, entry) in departing {
            departing[node] = (entry.connection, min(now, entry.since + forgiven))
        }
    }

    /// Stops admitting work and ends every connection.
    func shutdown() {
        isShuttingDown = true
        for id in connections.keys {
            refuse(id, Refused(.shuttingDown, "the controller is shutting down; retry shortly"))
        }
    }

    // MARK: - Directives

    private func apply(_ directives: [Membership.Directive], requester: Int?) {
        for directive in directives {
            switch directive {
            case let .welcome(node, incarnation, generation):
                guard let requester else { continue }
                if let old = sessions[node], old != requester {
                    close(old, grace: .zero)
                }
                sessions[node] = requester
                connections[requester]?.incarnation = incarnation
                if let member = membership.members[node] { lastSeen[node] = (member.address, member.capacity) }
                send(requester, .welcome(Welcome(
                    node: node, incarnation: incarnation,
                    heartbeatInterval: membership.settings.heartbeatInterval,
                    deadTimeout: membership.settings.deadTimeout)), generation: generation)
                endRecoveryIfEveryoneIsBack()
            case let .acknowledge(_, generation):
                if let requester { send(requester, .heartbeatAck, generation: generation) }
            case let .refuse(_, refusal):
                if let requester { refuse(requester, refused(refusal)) }
            case let .closeSession(node, incarnation, refusal):
                for (id, connection) in connections where connection.peer.name == node.value && connection.incarnation == incarnation {
                    if sessions[node] == id { sessions[node] = nil }
                    if case let .fenced(_, _, departure?) = refusal, departure.state == .left {
                        if holdsState(node) {
                            // Keep the connection: the next plan may copy from this node.
                            logger.info("\(node) leaves; it stays reachable until its state is handed off")
                            departing[node] = (id, MonotonicClock.now())
                        } else {
                            sayLeft(id, generation: departure.atGeneration)
                        }
                    } else {
                        refuse(id, refused(refusal))
                    }
                }
            case let .broadcastView(generation):
                let view = ControlMessage.view(View(members: membership.liveMembers.map {
                    View.Entry(node: $0.node, incarnation: $0.incarnation, address: $0.address)
                }))
                for (node, id) in sessions where membership.members[node] != nil {
                    send(id, view, generation: generation)
                }
                let live = membership.liveMembers
                let members = live.map(\.node)
                let memory = Dictionary(uniqueKeysWithValues: live.map { ($0.node, $0.capacity.memoryBytes) })
                let leaving = Set(departing.keys)
                if awaitingRecovery {
                    guard membership.awaitingRecovery.isEmpty else { continue }
                    awaitingRecovery = false
                    logger.info("recovery after the restart ends: \(members.count) member(s)")
                }
                checkpointDecision { $0.onMembership(live: Set(members)) }
                trainingDirectives { $0.onMembership(members: members, generation: generation, memory: memory, departing: leaving) }
            case let .record(event):
                journalMembership(event, requester: requester)
                events.record(event)
                if case let .paused(_, forgiven, _) = event { forgivePause(forgiven) }
            case .scheduleTick:
                break
            }
        }
    }

    private func refused(_ refusal: Membership.Refusal) -> Refused {
        switch refusal {
        case .fenced: Refused(.fenced, refusal.explanation)
        case .staleGeneration: Refused(.staleGeneration, refusal.explanation)
        case .futureGeneration: Refused(.futureGeneration, refusal.explanation)
        }
    }

    /// Frames queued for one connection at most.
    static let outboxCapacity = 4096

    private func send(_ id: Int, _ message: ControlMessage, generation: Generation? = nil) {
        guard var connection = connections[id], !connection.closing else { return }
        if case .dropped = connection.outbox.yield(.frame(message.frame(generation: generation ?? membership.generation))) {
            // The peer has not read \(outboxCapacity) frames: it is stuck or hostile; end it.
            logger.warning("\(connection.peer.name ?? connection.remoteAddress) reads too slowly (\(Self.outboxCapacity) frames queued); closing its connection")
            connection.closing = true
            connections[id] = connection
            connection.outbox.finish()
        }
    }

    /// Sends the refusal, then closes the connection.
    private func refuse(_ id: Int, _ refusal: Refused) {
        send(id, .refused(refusal))
        close(id, grace: .seconds(1))
    }

    private func close(_ id: Int, grace: Duration) {
        guard var connection = connections[id], !connection.closing else { return }
        connection.closing = true
        connections[id] = connection
        connection.outbox.yield(.close(grace: grace))
    }

    // MARK: - Bootstrap and tokens

    /// A bootstrap: the cheap checks first (the source's failure budget, the token's form, the
    /// name, the token itself), the CSR's signature check and signing only for a good token,
    /// and the token's use spent last.
    private func bootstrap(_ id: Int, _ request: BootstrapRequest) {
        let address = connections[id]?.remoteAddress ?? "?"
        let source = Self.host(of: address)
        let now = MonotonicClock.now()
        guard bootstrapFailures.admits(source, now: now) else {
            // Unheard: no token check, no log line, no event (a summary is logged by the tick).
            return refuse(id, Refused(.badToken, "too many failed bootstraps from \(source); wait \(bootstrapFailures.settings.refill.shortDescription) and retry with a valid token"))
        }
        func deny(_ code: Refused.Code, _ reason: String) {
            bootstrapFailures.failed(source, now: now)
            logger.warning("refused bootstrap of '\(request.name.prefix(64))' from \(address): \(reason)")
            events.recordBootstrap(node: String(request.name.prefix(64)), address: address, outcome: "refused", reason: reason, generation: membership.generation)
            refuse(id, Refused(code, reason))
        }
        guard case .success(let parsed) = BootstrapTokens.parse(request.token) else {
            return deny(.badToken, BootstrapTokens.TokenFormatError().explanation)
        }
        if case .failure(let refusal) = tokens.check(id: parsed.id, secret: parsed.secret, now: MonotonicClock.wallSeconds()) {
            return deny(.badToken, refusal.explanation)
        }
        if let problem = NodeID.problem(with: request.name) {
            return deny(.badRequest, "invalid node name '\(request.name.prefix(64))': \(problem)")
        }
        let node = NodeID(request.name)
        if membership.members[node] != nil {
            return deny(.nameInUse, "node name '\(node)' belongs to a live member; choose another --name")
        }
        let certificate: Certificate
        do {
            certificate = try authority.sign(csrDER: request.csrDER, node: node, lifetime: nodeCertificateLifetime)
        } catch {
            return deny(.badRequest, error.message)
        }
        switch tokens.redeem(id: parsed.id, secret: parsed.secret, now: MonotonicClock.wallSeconds()) {
        case .failure(let refusal):
            return deny(.badToken, refusal.explanation)
        case .success:
            // The name's earlier certificate (a member that died or left) may not come back.
            if let old = journal.state.members[node.value]?.certificateSerial ?? journal.state.departures[node.value]?.certificateSerial,
               !old.isEmpty, journal.state.revoked[old] == nil {
                revoke(serials: [old], of: node, reason: "replaced by a new bootstrap of \(node)")
            }
            logger.info("issued a node certificate to \(node) (\(address)) with token \(parsed.id)")
            events.recordBootstrap(node: node.value, address: address, outcome: "certificate issued", reason: "token \(parsed.id)", generation: membership.generation)
            send(id, .bootstrapGranted(BootstrapGranted(node: node, certificateDER: certificate.derBytes, caDER: authority.certificate.derBytes)))
            close(id, grace: .seconds(1))
        }
    }

    /// The address part of `ip:port` or `[v6]:port`.
    static func host(of address: String) -> String {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<close])
        }
        return address.lastIndex(of: ":").map { String(address[..<$0]) } ?? address
    }

    /// A connection whose certificate expired ends: TLS checked it at the handshake only. A
    /// member's connection drop then runs its reconnect grace, and it cannot reconnect with
    /// that certificate.
    private func endExpiredSessions(at now: Date) {
        for (id, connection) in connections where !connection.closing {
            guard let expiry = connection.peer.notValidAfter, expiry <= now else { continue }
            let who = "\(connection.peer.role?.rawValue ?? "peer") \(connection.peer.name ?? "?")"
            let text = "the certificate of \(who) expired at \(expiry); its session ends"
            logger.warning("\(text)")
            events.note(text, kind: "security")
            refuse(id, Refused(.certificateRequired, "this certificate expired at \(expiry); join again with a token (elastic token create) and --ca-hash"))
        }
    }

    /// Logs how many bootstraps the rate limit refused unheard, at most every 10 s.
    private func reportSuppressedBootstraps(now: Timestamp) {
        guard bootstrapFailures.suppressed > 0, now.since(lastSuppressedReport) >= .seconds(10) else { return }
        lastSuppressedReport = now
        let (attempts, sources) = bootstrapFailures.takeSuppressed()
        let text = "\(attempts) bootstrap attempt(s) from \(sources) address(es) refused unheard: too many failures (rate limit)"
        logger.warning("\(text)")
        events.note(text, kind: "bootstrap")
    }

    /// `elastic node revoke NAME`: every certificate the controller knows of the node (its
    /// member record, its last departure, its open connections) may no longer connect; its
    /// member dies at once and its connections close.
    private func revokeNode(_ id: Int, _ node: NodeID) {
        var serials = Set<String>()
        if let serial = journal.state.members[node.value]?.certificateSerial, !serial.isEmpty { serials.insert(serial) }
        if let serial = journal.state.departures[node.value]?.certificateSerial, !serial.isEmpty { serials.insert(serial) }
        for connection in connections.values where connection.peer.role == .node && connection.peer.name == node.value {
            if let serial = connection.peer.certificateSerial { serials.insert(serial) }
        }
        serials = serials.filter { journal.state.revoked[$0] == nil }
        guard !serials.isEmpty else {
            return refuse(id, Refused(.badRequest, "no unrevoked certificate of node '\(node)' is known; 'elastic status' lists the members"))
        }
        revoke(serials: serials.sorted(), of: node, reason: "revoked by an administrator")
        send(id, .done(message: "revoked \(serials.count) certificate(s) of \(node) (serial \(serials.sorted().joined(separator: ", "))); it can join again only with a new token"))
    }

    /// Records the revocations (before acting), closes every connection presenting one of the
    /// certificates and ends the node's membership.
    private func revoke(serials: [String], of node: NodeID, reason: String) {
        let now = MonotonicClock.wallSeconds()
        for serial in serials {
            journal.record(.revoked(DurableState.Revocation(serial: serial, node: node.value, at: now, reason: reason)))
        }
        let text = "certificate(s) of \(node) revoked (\(reason)): serial \(serials.joined(separator: ", "))"
        logger.warning("\(text)")
        events.note(text, kind: "security")
        let revoked = Set(serials)
        for (id, connection) in connections where connection.peer.certificateSerial.map(revoked.contains) == true {
            refuse(id, Refused(.certificateRevoked, "this certificate was revoked (\(reason)); join again with a new token (elastic token create) and a fresh --data-dir"))
        }
        let recorded = journal.state.members[node.value]?.certificateSerial
        let session = sessions[node].flatMap { connections[$0]?.peer.certificateSerial }
        if membership.members[node] != nil, [recorded, session].contains(where: { $0.map(revoked.contains) == true }) {
            apply(membership.onRevoke(node: node, now: MonotonicClock.now()), requester: nil)
        }
    }

    private func createToken(_ id: Int, _ request: TokenCreate) {
        do {
            let created = try tokens.create(ttl: request.ttl, uses: request.uses, description: request.description, now: MonotonicClock.wallSeconds())
            logger.info("created bootstrap token \(created.id)")
            send(id, .tokenCreated(TokenCreated(token: created.token, expiresAt: created.expiresAt)))
        } catch {
            refuse(id, Refused(.internalError, "cannot save the token: \(error)"))
        }
    }

    private func revokeToken(_ id: Int, _ tokenID: String) {
        do {
            if try tokens.revoke(id: tokenID) {
                logger.info("revoked bootstrap token \(tokenID)")
                send(id, .done(message: "token \(tokenID) revoked"))
            } else {
                refuse(id, Refused(.badRequest, "no token with id '\(tokenID)'; 'elastic token list' shows them"))
            }
        } catch {
            refuse(id, Refused(.internalError, "cannot save the tokens: \(error)"))
        }
    }

    // MARK: - Status

    private func status(now: Timestamp) -> ClusterStatus {
        var rows = membership.liveMembers.map { member in
            MemberStatus(
                node: member.node, incarnation: member.incarnation, address: member.address, state: member.state,
                sinceGeneration: member.incarnation, lastHeardAge: now.since(member.lastHeard), capacity: member.capacity,
                note: member.suspicion.map { $0.reason.rawValue } ?? "")
        }
        for (node, departure) in membership.departures.sorted(by: { $0.key < $1.key }) where membership.members[node] == nil {
            let seen = lastSeen[node]
            rows.append(MemberStatus(
                node: node, incarnation: departure.incarnation, address: seen?.address ?? "", state: departure.state,
                sinceGeneration: departure.atGeneration, lastHeardAge: .zero, capacity: seen?.capacity ?? Capacity(cores: 0, memoryBytes: 0, gflops: 0), note: departure.reason))
        }
        return ClusterStatus(
            generation: membership.generation, uptime: now.since(startedAt),
            heartbeatInterval: membership.settings.heartbeatInterval, deadTimeout: membership.settings.deadTimeout,
            members: rows, training: training?.status())
    }

    // MARK: - Training

    private func submitJob(_ id: Int, _ json: [UInt8]) {
        if let training, !["finished", "stopped"].contains(training.coordinator.phase.name) {
            refuse(id, Refused(.badRequest, "job '\(training.job.spec.name)' is \(training.coordinator.phase.name); submit another when it has finished"))
            return
        }
        let job: AcceptedJob
        do {
            job = try AcceptedJob.load(json: json, baseDirectory: baseDirectory)
        } catch {
            refuse(id, Refused(.badRequest, "\(error)"))
            return
        }
        logger.info("accepted job '\(job.spec.name)': \(job.spec.model.layers.count) layers, batch \(job.spec.batch), \(job.spec.totalSteps(samples: job.samples)) steps on \(job.samples) samples")
        do {
            training = try ControllerTraining(job: job, logger: logger)
        } catch {
            refuse(id, Refused(.badRequest, "\(error)"))
            return
        }
        guard let accepted = training, journal.record(.job(accepted.durableJob)) else {
            refuse(id, Refused(.internalError, "the controller's journal cannot be written"))
            return
        }
        send(id, .done(message: "job '\(job.spec.name)' accepted: \(job.spec.totalSteps(samples: job.samples)) steps"))
        events.note("job '\(job.spec.name)' accepted: \(job.spec.totalSteps(samples: job.samples)) steps")
        trainingDirectives { $0.start() }
    }

    /// Runs one input through the coordinator and carries out what it returns. A directive may
    /// feed the coordinator again (a new generation re-plans), so state is re-read each time.
    private func trainingDirectives(_ input: (inout TrainingCoordinator) -> [TrainingCoordinator.Directive]) {
        guard var current = training else { return }
        let before = current.coordinator.phase
        let holdersBefore = current.coordinator.holders
        let directives = input(&current.coordinator)
        training = current
        // Who holds what is durable before anything that depends on it is sent. (Compared with
        // the value before this input: most inputs, a step report, leave it as it was.)
        if current.coordinator.holders != holdersBefore {
            journal.record(.holders(current.coordinator.holders.map(DurableState.HolderSet.init)))
        }
        training?.noteTransition(from: before, reason: events.latest ?? "the members changed", now: MonotonicClock.now())
        if current.coordinator.phase != before, case .waiting(let why) = current.coordinator.phase {
            logger.warning("training waits: \(why)")
        }
        let job = current.job
        for directive in directives {
            switch directive {
            case let .assign(plan, nextStep, transfers):
                let copies = transfers.map { "stage \($0.stage) \($0.from)→\($0.to)" }.joined(separator: ", ")
                logger.info("plan for generation \(plan.generation) from step \(nextStep): \(plan.summary)\(plan.spares.isEmpty ? "" : "; spares: " + plan.spares.map(\.value).joined(separator: " "))\(copies.isEmpty ? "" : "; state copies: " + copies)")
                let restore = training?.coordinator.restoreSource
                if let restore { logger.info("every slot loads its layers from checkpoint \(restore)") }
                let assignment = Assignment(plan: plan, dataAddresses: dataAddresses, jobJSON: job.json, nextStep: UInt64(nextStep), transfers: transfers, restore: restore ?? "",
                                            lastCommitGeneration: training?.coordinator.ledger.last?.generation ?? .zero)
                let outside = Set(transfers.map(\.from)).subtracting(plan.workers + plan.spares).sorted()
                for node in plan.workers + plan.spares + outside { sendToMember(node, .assign(assignment), generation: plan.generation) }
                events.note("generation \(plan.generation): plan \(plan.summary) from step \(nextStep)\(copies.isEmpty ? "" : "; state copies: " + copies)\(restore.map { "; restoring \($0)" } ?? "")")
            case let .startStep(step, generation):
                for node in training?.coordinator.plan?.workers ?? [] { sendToMember(node, .startStep(step: UInt64(step)), generation: generation) }
            case let .commit(step, generation):
                // Written ahead in `.record`: without it, no worker may apply the step.
                guard let plan = training?.coordinator.plan, journal.state.ledger.last?.step == step else { continue }
                for node in plan.workers { sendToMember(node, .commit(step: UInt64(step)), generation: generation) }
                // After the commit on the same connections: the writers snapshot the state
                // this commit produces.
                let total = training?.coordinator.totalSteps ?? 0
                checkpointDecision { $0.onCommitted(applied: step + 1, totalSteps: total, plan: plan) }
            case let .rolledBack(toStep, fromStep, checkpoint):
                logger.warning("every holder of a stage is gone: training goes back to checkpoint \(checkpoint) (step \(toStep)); steps \(toStep)…\(fromStep - 1) are computed again")
                journal.record(.rolledBack(toStep: toStep, fromStep: fromStep))
                ledgerFile.appendRollback(toStep: toStep, fromStep: fromStep, checkpoint: checkpoint, job: job.spec.name)
                events.note("every holder of a stage is gone: back to checkpoint \(checkpoint) (step \(toStep))")
            case let .record(entry):
                journal.record(.committed(DurableState.Step(entry)))
                ledgerFile.append(entry, job: job.spec.name)
                if let recovery = training?.noteCommit(step: entry.step, now: entry.committedAt) {
                    events.note("recovered: step \(entry.step) committed \(recovery.duration.shortDescription) after \(recovery.reason)")
                }
                if !entry.replicasAgree {
                    logger.error("step \(entry.step): replicas of a stage reported different weights (invariant 3 broken)")
                }
                let now = MonotonicClock.now()
                guard let state = training else { continue }
                if entry.step == 0 || now.since(state.lastLog) >= .seconds(2) || entry.step + 1 == state.coordinator.totalSteps {
                    training?.lastLog = now
                    logger.info("step \(entry.step + 1)/\(state.coordinator.totalSteps) loss \(String(format: "%.6f", entry.loss)) · \(String(format: "%.0f", state.samplesPerSecond())) samples/s")
                }
            case let .finished(steps):
                journal.record(.jobEnded("finished"))
                let ledger = training?.coordinator.ledger ?? []
                let marks = Set((0...8).map { $0 * (steps - 1) / 8 } + [0, steps - 1])
                let curve = ledger.filter { marks.contains($0.step) }.map { "\($0.step): \(String(format: "%.4f", $0.loss))" }.joined(separator: " · ")
                logger.info("job '\(job.spec.name)' finished: \(steps) steps, final loss \(String(format: "%.6f", ledger.last?.loss ?? .nan)); loss curve \(curve)")
                events.note("job '\(job.spec.name)' finished: \(steps) steps, final loss \(String(format: "%.6f", ledger.last?.loss ?? .nan))")
            case let .stopped(reason):
                journal.record(.jobEnded("stopped: \(reason)"))
                logger.error("training stopped: \(reason)")
                events.note("training stopped: \(reason)")
            case let .openGeneration(reason):
                apply(membership.onNewGeneration(reason: reason), requester: nil)
            }
        }
        releaseDepartures()
    }

    /// Whether `node` holds the last committed state of some stage while training runs.
    private func holdsState(_ node: NodeID) -> Bool {
        guard let coordinator = training?.coordinator, ["running", "assigning"].contains(coordinator.phase.name) else { return false }
        return coordinator.holders?.nodes.contains { $0.contains(node) } == true
    }

    /// Lets a leaving member go once no plan being set up copies from it.
    private func releaseDepartures() {
        let sources = training?.coordinator.transferSources ?? []
        for node in departing.keys where !sources.contains(node) { release(node) }
    }

    private func release(_ node: NodeID) {
        guard let entry = departing.removeValue(forKey: node) else { return }
        logger.info("\(node) handed off its state and leaves")
        sayLeft(entry.connection, generation: membership.generation)
    }

    /// Ends a leaving member's session: `done`, then close.
    private func sayLeft(_ id: Int, generation: Generation) {
        send(id, .done(message: "left the cluster at generation \(generation)"))
        close(id, grace: .seconds(1))
    }

    // MARK: - Durability

    /// Records a membership change in the journal before anything about it is sent.
    private func journalMembership(_ event: Membership.Event, requester: Int?) {
        switch event {
        case let .joined(node, incarnation, address, _):
            let capacity = membership.members[node]?.capacity ?? Capacity(cores: 0, memoryBytes: 0, gflops: 0)
            journal.record(.joined(DurableState.Member(
                node: node.value, incarnation: incarnation.value, address: address, cores: capacity.cores,
                memoryBytes: capacity.memoryBytes, gflops: capacity.gflops,
                certificateSerial: requester.flatMap { connections[$0]?.peer.certificateSerial } ?? "",
                dataAddress: dataAddresses[node] ?? "")))
        case let .died(node, incarnation, reason, _, generation):
            journal.record(.departed(DurableState.Departure(node: node.value, incarnation: incarnation.value, state: "dead", atGeneration: generation.value, reason: reason.rawValue,
                                                            certificateSerial: journal.state.members[node.value]?.certificateSerial)))
        case let .left(node, incarnation, generation):
            journal.record(.departed(DurableState.Departure(node: node.value, incarnation: incarnation.value, state: "left", atGeneration: generation.value, reason: "left the cluster",
                                                            certificateSerial: journal.state.members[node.value]?.certificateSerial)))
        case let .opened(_, generation):
            journal.record(.generation(generation.value))
        case .resumed, .suspected, .recovered, .refused, .paused:
            break
        }
    }

    /// After a restart: once every member the journal listed has resumed, training continues
    /// under a new generation (the holders keep their layers).
    private func endRecoveryIfEveryoneIsBack() {
        guard awaitingRecovery, membership.awaitingRecovery.isEmpty else { return }
        apply(membership.onNewGeneration(reason: "controller recovered: every member resumed"), requester: nil)
    }

    // MARK: - Checkpoints

    /// Runs one input through the checkpoint schedule and carries out its decision.
    private func checkpointDecision(_ input: (inout CheckpointSchedule) -> CheckpointSchedule.Decision?) {
        guard var keeper = training?.checkpoints else { return }
        let decision = input(&keeper.schedule)
        training?.checkpoints = keeper
        guard let decision, let current = training else { return }
        switch decision {
        case let .request(step, writers):
            training?.checkpoints?.requestedAt = MonotonicClock.now()
            keeper.discardIncoming({ $0 != step }, logger: logger)
            let generation = current.coordinator.plan?.generation ?? membership.generation
            for (_, node) in writers.sorted(by: { $0.key < $1.key }) { sendToMember(node, .checkpoint(step: UInt64(step)), generation: generation) }
        case let .skipped(step, reason):
            logger.warning("checkpoint of step \(step) skipped: \(reason)")
        case let .abandoned(step, reason):
            logger.warning("checkpoint of step \(step) abandoned: \(reason)")
            checkpointFailed(step: step, reason: reason)
            resumeDeferredCheckpoint()
        case let .complete(pending):
            do {
                let summary = try keeper.commit(pending, job: current.job, plan: current.coordinator.plan)
                let took = keeper.requestedAt.map { MonotonicClock.now().since($0).shortDescription } ?? "?"
                if let requestedAt = keeper.requestedAt {
                    let now = MonotonicClock.now()
                    training?.checkpoints?.timings[pending.step] = (now, now.since(requestedAt))
                }
                events.note("checkpoint of step \(pending.step) committed in \(took): \(summary.rawBytes >> 10) KiB → \(summary.storedBytes >> 10) KiB", kind: "checkpoint")
                training?.checkpoints?.committed(at: Date())
                training?.checkpoints?.schedule.onCommitted(checkpoint: pending.step, path: summary.path)
                training?.checkpoints?.written.append(summary)
                journal.record(.checkpoint(DurableState.Checkpoint(step: summary.step, path: summary.path, rawBytes: UInt64(summary.rawBytes), storedBytes: UInt64(summary.storedBytes))))
                training?.coordinator.onCheckpoint(step: pending.step, path: summary.path)
                logger.info("checkpoint of step \(pending.step) committed in \(took): \(summary.path), \(summary.rawBytes >> 10) KiB → \(summary.storedBytes >> 10) KiB (ratio \(String(format: "%.3f", summary.ratio)))")
                let (store, keep, logger) = (keeper.store, keeper.keep, self.logger)
                Task.detached(priority: .utility) {
                    do {
                        let report = try store.prune(keep: keep)
                        if !report.removed.isEmpty { logger.info("checkpoint retention (keep \(keep)): removed \(report.removed.joined(separator: ", "))") }
                    } catch {
                        logger.error("checkpoint retention failed: \(error)")
                    }
                }
            } catch {
                logger.error("checkpoint of step \(pending.step) could not be committed: \(error)")
                checkpointFailed(step: pending.step, reason: "the commit failed: \(error)")
            }
            resumeDeferredCheckpoint()
        }
    }

    /// A checkpoint will not be made: counted for status and the dashboard, its partial
    /// directory removed.
    private func checkpointFailed(step: Int, reason: String) {
        guard training?.checkpoints != nil else { return }
        training?.checkpoints?.failed(step: step, reason: reason)
        let failures = training?.checkpoints?.failures.inARow ?? 0
        events.note("checkpoint of step \(step) failed\(failures > 1 ? " (\(failures) in a row)" : ""): \(reason)", kind: "checkpoint")
        training?.checkpoints?.discardIncoming({ $0 == step }, logger: logger)
    }

    /// Requests the last step's checkpoint if it waited for the one that just ended.
    private func resumeDeferredCheckpoint() {
        guard let plan = training?.coordinator.plan else { return }
        checkpointDecision { $0.resumeDeferred(plan: plan) }
    }

    // MARK: - Observation

    /// The dashboard's and `/metrics`' snapshot, taken in one turn of the actor.
    func observation() -> ControllerObservation {
        ControllerObservation.gather(membership: membership, training: training, events: events.recent(), startedAt: startedAt, now: MonotonicClock.now())
    }

    private func sendToMember(_ node: NodeID, _ message: ControlMessage, generation: Generation) {
        guard let id = sessions[node] ?? departing[node]?.connection else {
            logger.warning("no session to \(node) for \(message.kind)")
            return
        }
        send(id, message, generation: generation)
    }
}
