import ElasticCore

/// A value with a fixed binary form inside a frame's payload.
public protocol WireCodable: Sendable, Equatable {
    func encode(to writer: inout WireWriter)
    init(from reader: inout WireReader) throws(WireError)
}

/// Every message of the control plane (controller ⇄ worker, controller ⇄ admin CLI, and the
/// bootstrap exchange of a joining worker). The frame's kind byte selects the case.
public enum ControlMessage: Sendable, Equatable {
    // Membership (worker → controller unless noted).
    case hello(Hello)
    /// controller → worker
    case welcome(Welcome)
    case heartbeat(incarnation: Generation)
    /// controller → worker: the frame's generation is the current one.
    case heartbeatAck
    /// controller → worker
    case view(View)
    case leave(incarnation: Generation)
    /// controller → anyone: the last message was refused; usually followed by a close.
    case refused(Refused)
    // Bootstrap (no client certificate yet).
    case caRequest
    case caBundle(certificateDER: [UInt8])
    case bootstrapRequest(BootstrapRequest)
    case bootstrapGranted(BootstrapGranted)
    // Administration (admin certificate).
    case statusRequest
    case statusReply(ClusterStatus)
    case tokenCreate(TokenCreate)
    case tokenCreated(TokenCreated)
    case tokenListRequest
    case tokenList([TokenInfo])
    case tokenRevoke(id: String)
    case done(message: String)
    /// admin → controller: revoke every certificate of this node (answered with `done`).
    case nodeRevoke(node: String)
    // Training.
    /// controller → worker: the plan of this generation and the job.
    case assign(Assignment)
    /// worker → controller: layers and data-plane links are in place for the frame's generation.
    case ready
    /// controller → worker
    case startStep(step: UInt64)
    /// worker → controller
    case stepDone(StepReport)
    /// controller → worker: every slot finished `step`; apply its update.
    case commit(step: UInt64)
    /// worker → controller: this worker cannot go on (bad data, a broken link).
    case trainingFailed(reason: String)
    /// admin → controller: start a job (JSON job spec).
    case submitJob(json: [UInt8])
    /// worker → controller: a link to a peer broke during `step`; the step is abandoned.
    case stepAbandoned(step: UInt64, reason: String)
    /// controller → the first replica of each stage: snapshot this stage's layers at `step`
    /// (steps applied) and write them into the job's checkpoint directory in the background.
    case checkpoint(step: UInt64)
    /// worker → controller: this stage's part of the checkpoint at `step` is written (or not).
    case checkpointWritten(CheckpointWritten)

    public enum Kind: UInt8, Sendable, CaseIterable {
        case hello = 1, welcome, heartbeat, heartbeatAck, view, leave, refused
        case caRequest = 16, caBundle, bootstrapRequest, bootstrapGranted
        case statusRequest = 32, statusReply, tokenCreate, tokenCreated, tokenListRequest, tokenList, tokenRevoke, done, nodeRevoke
        case assign = 48, ready, startStep, stepDone, commit, trainingFailed, submitJob, stepAbandoned, checkpoint, checkpointWritten
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .heartbeat: .heartbeat
        case .heartbeatAck: .heartbeatAck
        case .view: .view
        case .leave: .leave
        case .refused: .refused
        case .caRequest: .caRequest
        case .caBundle: .caBundle
        case .bootstrapRequest: .bootstrapRequest
        case .bootstrapGranted: .bootstrapGranted
        case .statusRequest: .statusRequest
        case .statusReply: .statusReply
        case .tokenCreate: .tokenCreate
        case .tokenCreated: .tokenCreated
        case .tokenListRequest: .tokenListRequest
        case .tokenList: .tokenList
        case .tokenRevoke: .tokenRevoke
        case .done: .done
        case .nodeRevoke: .nodeRevoke
        case .assign: .assign
        case .ready: .ready
        case .startStep: .startStep
        case .stepDone: .stepDone
        case .commit: .commit
        case .trainingFailed: .trainingFailed
        case .submitJob: .submitJob
        case .stepAbandoned: .stepAbandoned
        case .checkpoint: .checkpoint
        case .checkpointWritten: .checkpointWritten
        }
    }

    /// The frame carrying this message at `generation`.
    public func frame(generation: Generation) -> Frame {
        var writer = WireWriter()
        switch self {
        case .hello(let value): value.encode(to: &writer)
        case .welcome(let value): value.encode(to: &writer)
        case .heartbeat(let incarnation), .leave(let incarnation): writer.write(incarnation.value)
        case .heartbeatAck, .caRequest, .statusRequest, .tokenListRequest: break
        case .view(let value): value.encode(to: &writer)
        case .refused(let value): value.encode(to: &writer)
        case .caBundle(let der): writer.write(bytes: der)
        case .bootstrapRequest(let value): value.encode(to: &writer)
        case .bootstrapGranted(let value): value.encode(to: &writer)
        case .statusReply(let value): value.encode(to: &writer)
        case .tokenCreate(let value): value.encode(to: &writer)
        case .tokenCreated(let value): value.encode(to: &writer)
        case .tokenList(let values): writer.write(list: values)
        case .tokenRevoke(let id): writer.write(id)
        case .nodeRevoke(let node): writer.write(node)
        case .done(let message): writer.write(message)
        case .assign(let value): value.encode(to: &writer)
        case .ready: break
        case .startStep(let step), .commit(let step), .checkpoint(let step): writer.write(step)
        case .checkpointWritten(let value): value.encode(to: &writer)
        case .stepDone(let value): value.encode(to: &writer)
        case .trainingFailed(let reason): writer.write(reason)
        case .submitJob(let json): writer.write(bytes: json)
        case .stepAbandoned(let step, let reason):
            writer.write(step)
            writer.write(reason)
        }
        return Frame(kind: kind.rawValue, generation: generation, payload: writer.bytes)
    }

    /// Decodes a frame's payload; refuses unknown kinds, short or long payloads and bad values.
    public init(frame: Frame) throws(WireError) {
        guard let kind = Kind(rawValue: frame.kind) else {
            throw WireError(.unknownMessageKind, "unknown message kind \(frame.kind)")
        }
        var reader = WireReader(frame.payload)
        switch kind {
        case .hello: self = .hello(try Hello(from: &reader))
        case .welcome: self = .welcome(try Welcome(from: &reader))
        case .heartbeat: self = .heartbeat(incarnation: Generation(try reader.read(UInt64.self)))
        case .heartbeatAck: self = .heartbeatAck
        case .view: self = .view(try View(from: &reader))
        case .leave: self = .leave(incarnation: Generation(try reader.read(UInt64.self)))
        case .refused: self = .refused(try Refused(from: &reader))
        case .caRequest: self = .caRequest
        case .caBundle: self = .caBundle(certificateDER: try reader.readBytes(limit: 64 << 10))
        case .bootstrapRequest: self = .bootstrapRequest(try BootstrapRequest(from: &reader))
        case .bootstrapGranted: self = .bootstrapGranted(try BootstrapGranted(from: &reader))
        case .statusRequest: self = .statusRequest
        case .statusReply: self = .statusReply(try ClusterStatus(from: &reader))
        case .tokenCreate: self = .tokenCreate(try TokenCreate(from: &reader))
        case .tokenCreated: self = .tokenCreated(try TokenCreated(from: &reader))
        case .tokenListRequest: self = .tokenListRequest
        case .tokenList: self = .tokenList(try reader.readList(minimumItemSize: 22))
        case .tokenRevoke: self = .tokenRevoke(id: try reader.readString(limit: 64))
        case .done: self = .done(message: try reader.readString())
        case .nodeRevoke: self = .nodeRevoke(node: try reader.readString(limit: 64))
        case .assign: self = .assign(try Assignment(from: &reader))
        case .ready: self = .ready
        case .startStep: self = .startStep(step: try reader.read(UInt64.self))
        case .stepDone: self = .stepDone(try StepReport(from: &reader))
        case .commit: self = .commit(step: try reader.read(UInt64.self))
        case .trainingFailed: self = .trainingFailed(reason: try reader.readString())
        case .submitJob: self = .submitJob(json: try reader.readBytes(limit: 256 << 10))
        case .stepAbandoned: self = .stepAbandoned(step: try reader.read(UInt64.self), reason: try reader.readString())
        case .checkpoint: self = .checkpoint(step: try reader.read(UInt64.self))
        case .checkpointWritten: self = .checkpointWritten(try CheckpointWritten(from: &reader))
        }
        try reader.expectEnd()
    }
}

// MARK: - Messages

public struct Hello: WireCodable {
    /// The incarnation to resume after a dropped connection; nil joins as a new member.
    public var resuming: Generation?
    public var capacity: Capacity
    /// The worker's software version, for the event log.
    public var softwareVersion: String
    /// `HOST:PORT` of the worker's data-plane listener (empty: none).
    public var dataAddress: String

    public init(resuming: Generation?, capacity: Capacity, softwareVersion: String, dataAddress: String = "") {
        self.resuming = resuming
        self.capacity = capacity
        self.softwareVersion = softwareVersion
        self.dataAddress = dataAddress
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(optional: resuming?.value)
        capacity.encode(to: &writer)
        writer.write(softwareVersion)
        writer.write(dataAddress)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        resuming = try reader.readOptional(UInt64.self).map { Generation($0) }
        capacity = try Capacity(from: &reader)
        softwareVersion = try reader.readString(limit: 128)
        dataAddress = try reader.readString(limit: 256)
    }
}

public struct Welcome: WireCodable {
    public var node: NodeID
    public var incarnation: Generation
    public var heartbeatInterval: Duration
    public var deadTimeout: Duration

    public init(node: NodeID, incarnation: Generation, heartbeatInterval: Duration, deadTimeout: Duration) {
        self.node = node
        self.incarnation = incarnation
        self.heartbeatInterval = heartbeatInterval
        self.deadTimeout = deadTimeout
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(node.value)
        writer.write(incarnation.value)
        writer.write(UInt32(clamping: max(1, heartbeatInterval.milliseconds)))
        writer.write(UInt32(clamping: deadTimeout.milliseconds))
    }

    public init(from reader: inout WireReader) throws(WireError) {
        node = NodeID(try reader.readString(limit: 64))
        incarnation = Generation(try reader.read(UInt64.self))
        let heartbeat = try reader.read(UInt32.self)
        guard heartbeat > 0 else { throw WireError(.invalidValue, "heartbeat interval must be positive") }
        heartbeatInterval = .milliseconds(heartbeat)
        deadTimeout = .milliseconds(try reader.read(UInt32.self))
    }
}

public struct View: WireCodable {
    public struct Entry: WireCodable {
        public var node: NodeID
        public var incarnation: Generation
        public var address: String

        public init(node: NodeID, incarnation: Generation, address: String) {
            self.node = node
            self.incarnation = incarnation
            self.address = address
        }

        public func encode(to writer: inout WireWriter) {
            writer.write(node.value)
            writer.write(incarnation.value)
            writer.write(address)
        }

        public init(from reader: inout WireReader) throws(WireError) {
            node = NodeID(try reader.readString(limit: 64))
            incarnation = Generation(try reader.read(UInt64.self))
            address = try reader.readString(limit: 256)
        }
    }

    public var members: [Entry]

    public init(members: [Entry]) { self.members = members }
    public func encode(to writer: inout WireWriter) { writer.write(list: members) }
    public init(from reader: inout WireReader) throws(WireError) { members = try reader.readList(minimumItemSize: 16) }
}

public struct Refused: WireCodable, Error {
    public enum Code: UInt16, Sendable, CaseIterable {
        /// The member's incarnation is dead or gone: join again as a new member.
        case fenced = 1
        case staleGeneration, futureGeneration
        /// The request needs a client certificate (bootstrap first).
        case certificateRequired
        case badToken
        case badRequest
        case nameInUse
        case notAuthorized
        case protocolError
        case internalError
        case shuttingDown
        /// The certificate was revoked: join again with a new token.
        case certificateRevoked
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(code.rawValue)
        writer.write(message)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let raw = try reader.read(UInt16.self)
        guard let code = Code(rawValue: raw) else { throw WireError(.invalidValue, "unknown refusal code \(raw)") }
        self.code = code
        message = try reader.readString()
    }
}

public struct BootstrapRequest: WireCodable {
    public var token: String
    public var name: String
    /// A PKCS#10 certificate signing request, DER.
    public var csrDER: [UInt8]

    public init(token: String, name: String, csrDER: [UInt8]) {
        self.token = token
        self.name = name
        self.csrDER = csrDER
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(token)
        writer.write(name)
        writer.write(bytes: csrDER)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        token = try reader.readString(limit: 64)
        name = try reader.readString(limit: 64)
        csrDER = try reader.readBytes(limit: 16 << 10)
    }
}

public struct BootstrapGranted: WireCodable {
    public var node: NodeID
    public var certificateDER: [UInt8]
    public var caDER: [UInt8]

    public init(node: NodeID, certificateDER: [UInt8], caDER: [UInt8]) {
        self.node = node
        self.certificateDER = certificateDER
        self.caDER = caDER
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(node.value)
        writer.write(bytes: certificateDER)
        writer.write(bytes: caDER)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        node = NodeID(try reader.readString(limit: 64))
        certificateDER = try reader.readBytes(limit: 64 << 10)
        caDER = try reader.readBytes(limit: 64 << 10)
    }
}

public struct MemberStatus: WireCodable {
    public var node: NodeID
    public var incarnation: Generation
    public var address: String
    public var state: Membership.State
    /// For departed members: the generation at which they left or died.
    public var sinceGeneration: Generation
    public var lastHeardAge: Duration
    public var capacity: Capacity
    /// Why a member is suspect or departed; empty when alive.
    public var note: String

    public init(node: NodeID, incarnation: Generation, address: String, state: Membership.State, sinceGeneration: Generation, lastHeardAge: Duration, capacity: Capacity, note: String) {
        self.node = node
        self.incarnation = incarnation
        self.address = address
        self.state = state
        self.sinceGeneration = sinceGeneration
        self.lastHeardAge = lastHeardAge
        self.capacity = capacity
        self.note = note
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(node.value)
        writer.write(incarnation.value)
        writer.write(address)
        writer.write(state.rawValue)
        writer.write(sinceGeneration.value)
        writer.write(UInt64(clamping: lastHeardAge.milliseconds))
        capacity.encode(to: &writer)
        writer.write(note)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        node = NodeID(try reader.readString(limit: 64))
        incarnation = Generation(try reader.read(UInt64.self))
        address = try reader.readString(limit: 256)
        let rawState = try reader.readString(limit: 16)
        guard let state = Membership.State(rawValue: rawState) else { throw WireError(.invalidValue, "unknown member state '\(rawState)'") }
        self.state = state
        sinceGeneration = Generation(try reader.read(UInt64.self))
        lastHeardAge = try reader.readMilliseconds()
        capacity = try Capacity(from: &reader)
        note = try reader.readString()
    }
}

public struct ClusterStatus: WireCodable {
    public var generation: Generation
    public var uptime: Duration
    public var heartbeatInterval: Duration
    public var deadTimeout: Duration
    /// Live members first, then departed ones; each sorted by node.
    public var members: [MemberStatus]
    /// The job, when one was submitted.
    public var training: TrainingStatus?

    public init(generation: Generation, uptime: Duration, heartbeatInterval: Duration, deadTimeout: Duration, members: [MemberStatus], training: TrainingStatus? = nil) {
        self.generation = generation
        self.uptime = uptime
        self.heartbeatInterval = heartbeatInterval
        self.deadTimeout = deadTimeout
        self.members = members
        self.training = training
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(generation.value)
        writer.write(UInt64(clamping: uptime.milliseconds))
        writer.write(UInt64(clamping: heartbeatInterval.milliseconds))
        writer.write(UInt64(clamping: deadTimeout.milliseconds))
        writer.write(list: members)
        writer.write(training != nil)
        training?.encode(to: &writer)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        generation = Generation(try reader.read(UInt64.self))
        uptime = try reader.readMilliseconds()
        heartbeatInterval = try reader.readMilliseconds()
        deadTimeout = try reader.readMilliseconds()
        members = try reader.readList(minimumItemSize: 60)
        training = try reader.read(Bool.self) ? try TrainingStatus(from: &reader) : nil
    }
}

public struct TokenCreate: WireCodable {
    public var ttl: Duration?
    public var uses: UInt32?
    public var description: String

    public init(ttl: Duration?, uses: UInt32?, description: String) {
        self.ttl = ttl
        self.uses = uses
        self.description = description
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(optional: ttl.map { UInt64(clamping: $0.milliseconds / 1000) })
        writer.write(optional: uses)
        writer.write(description)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        if let seconds = try reader.readOptional(UInt64.self) {
            // The largest whole number of seconds a Duration holds in nanoseconds.
            guard seconds <= UInt64(Int64.max / 1_000_000_000) else {
                throw WireError(.invalidValue, "a token lifetime of \(seconds) s is out of range")
            }
            ttl = .seconds(Int64(seconds))
        } else {
            ttl = nil
        }
        uses = try reader.readOptional(UInt32.self)
        description = try reader.readString(limit: 256)
    }
}

public struct TokenCreated: WireCodable {
    public var token: String
    public var expiresAt: Int64?

    public init(token: String, expiresAt: Int64?) {
        self.token = token
        self.expiresAt = expiresAt
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(token)
        writer.write(optional: expiresAt)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        token = try reader.readString(limit: 64)
        expiresAt = try reader.readOptional(Int64.self)
    }
}

/// A token as listed to an administrator: never its secret.
public struct TokenInfo: WireCodable {
    public var id: String
    public var createdAt: Int64
    public var expiresAt: Int64?
    public var usesLeft: UInt32?
    public var uses: UInt32
    public var description: String

    public init(id: String, createdAt: Int64, expiresAt: Int64?, usesLeft: UInt32?, uses: UInt32, description: String) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLeft = usesLeft
        self.uses = uses
        self.description = description
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(id)
        writer.write(createdAt)
        writer.write(optional: expiresAt)
        writer.write(optional: usesLeft)
        writer.write(uses)
        writer.write(description)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        id = try reader.readString(limit: 64)
        createdAt = try reader.read(Int64.self)
        expiresAt = try reader.readOptional(Int64.self)
        usesLeft = try reader.readOptional(UInt32.self)
        uses = try reader.read(UInt32.self)
        description = try reader.readString(limit: 256)
    }
}

extension Capacity: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(cores)
        writer.write(memoryBytes)
        writer.write(gflops)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let cores = try reader.read(UInt32.self)
        let memory = try reader.read(UInt64.self)
        let gflops = try reader.read(Double.self)
        guard gflops.isFinite, gflops >= 0 else { throw WireError(.invalidValue, "compute speed must be a finite, non-negative number") }
        self.init(cores: cores, memoryBytes: memory, gflops: gflops)
    }
}

// MARK: - Helpers for optionals and lists

extension WireWriter {
    /// A presence byte, then the value when present.
    public mutating func write<T: FixedWidthInteger>(optional value: T?) {
        write(value != nil)
        if let value { write(integer: value) }
    }

    public mutating func write<T: WireCodable>(list: [T]) {
        write(count: list.count)
        for item in list { item.encode(to: &self) }
    }
}

extension WireReader {
    /// A duration written as u64 milliseconds; refused beyond what a `Duration` holds in
    /// nanoseconds, so that every decoded value encodes back to the same bytes.
    public mutating func readMilliseconds() throws(WireError) -> Duration {
        let value = try read(UInt64.self)
        guard value <= UInt64(Int64.max / 1_000_000) else {
            throw WireError(.invalidValue, "a duration of \(value) ms is out of range")
        }
        return .milliseconds(Int64(value))
    }

    public mutating func readOptional<T: FixedWidthInteger>(_ type: T.Type) throws(WireError) -> T? {
        try read(Bool.self) ? try read(integer: T.self) : nil
    }

    public mutating func readList<T: WireCodable>(minimumItemSize: Int) throws(WireError) -> [T] {
        let count = try readCount(minimumItemSize: minimumItemSize)
        var items: [T] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try T(from: &self)) }
        return items
    }
}
