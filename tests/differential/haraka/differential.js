'use strict'
// The one plugin tests/differential gives Haraka (copied into each case's config directory).
//
// - It lets the harness relay: every connection (from 127.0.0.1 in the case's namespace) is
//   marked relaying and every recipient accepted, so Haraka's outbound takes the mail.
// - It scales the retry delays: outbound.ini's temp_fail_intervals refuses values under 5 s,
//   so the `deferred` hook answers DENYSOFT with the delay Haraka chose divided by the scale
//   factor (outbound then waits that many whole seconds). Haraka's own choice, and when it
//   gives up (the number of temp_fail_intervals), are left as they are.
// - It writes what outbound did as JSON Lines (events.jsonl), with millisecond times: the
//   attempt starts, every connection outbound opens or fails to open (host, address, error),
//   deferrals and bounces with every recipient's DSN fields, deliveries. The connections are
//   seen by wrapping outbound's client_pool.get_client for the duration of each
//   HMailItem.try_deliver call; the wrappers only record, they change nothing.

const fs = require('node:fs')
const path = require('node:path')

const SCALE = Number(process.env.DIFFERENTIAL_SCALE || '1')
const EVENTS = process.env.DIFFERENTIAL_EVENTS || path.join(process.cwd(), 'events.jsonl')

function record(kind, fields) {
    fs.appendFileSync(EVENTS, `${JSON.stringify({ t: Date.now() / 1000, kind, ...fields })}\n`)
}

function recipients(hmail) {
    return (hmail.todo?.rcpt_to || []).map((r) => ({
        address: r.address,
        dsn_status: r.dsn_status ?? null,
        dsn_code: r.dsn_code ?? null,
        dsn_smtp_code: r.dsn_smtp_code ?? null,
        dsn_smtp_response: r.dsn_smtp_response ?? null,
        dsn_action: r.dsn_action ?? null,
        dsn_remote_mta: r.dsn_remote_mta ?? null,
        reason: r.reason ?? null,
    }))
}

let trying = null // the HMailItem whose try_deliver is running (get_client is called in it)

function watch_connections(plugin) {
    const pool = plugin.haraka_require('outbound/client_pool')
    const HMailItem = plugin.haraka_require('outbound/hmail')
    if (pool.get_client.differential) return
    const try_deliver = HMailItem.prototype.try_deliver
    HMailItem.prototype.try_deliver = function (...args) {
        trying = this
        try {
            return try_deliver.apply(this, args)
        } finally {
            trying = null
        }
    }
    const get_client = pool.get_client
    pool.get_client = function (mx, callback) {
        const hmail = trying
        const started = Date.now() / 1000
        return get_client.call(this, mx, (err, socket) => {
            record('connection', {
                uuid: hmail?.todo?.uuid ?? null,
                started,
                host: mx.from_dns ?? null,
                ip: mx.exchange ?? null,
                port: mx.port ?? null,
                error: err ? String(err) : null,
            })
            callback(err, socket)
        })
    }
    pool.get_client.differential = true
    // The DSN Haraka builds for a bounce: its Status lines, per Final-Recipient.
    const populate = HMailItem.prototype.populate_bounce_message_with_headers
    HMailItem.prototype.populate_bounce_message_with_headers = function (from, to, reason, header, cb) {
        const hmail = this
        return populate.call(this, from, to, reason, header, (err, body) => {
            const text = Array.isArray(body) ? body.join('') : ''
            const statuses = []
            const pattern = /Final-Recipient: rfc822;(\S+)\r?\n(?:Action: [^\r\n]*\r?\n)?(?:Status: ([^\r\n]*))?/g
            let match
            while ((match = pattern.exec(text))) statuses.push({ recipient: match[1], status: match[2] ?? null })
            record('dsn', { uuid: hmail.todo?.uuid ?? null, to: to?.address ?? null, statuses })
            cb(err, body)
        })
    }
}

exports.register = function () {
    watch_connections(this)
    this.register_hook('connect', 'relay_everything')
    this.register_hook('rcpt', 'accept_every_recipient')
    this.register_hook('data_post', 'note_message_id')
    this.register_hook('send_email', 'note_attempt')
    this.register_hook('deferred', 'scale_retry')
    this.register_hook('bounce', 'note_bounce')
    this.register_hook('delivered', 'note_delivery')
}

exports.relay_everything = function (next, connection) {
    connection.relaying = true
    next()
}

exports.accept_every_recipient = function (next) {
    next(OK)
}

exports.note_message_id = function (next, connection) {
    const txn = connection.transaction
    record('received', {
        uuid: txn.uuid,
        message_id: (txn.header.get('Message-ID') || '').trim(),
        sender: txn.mail_from?.address ?? '',
    })
    next()
}

exports.note_attempt = function (next, hmail) {
    record('attempt', {
        uuid: hmail.todo.uuid,
        domain: hmail.todo.domain,
        failures: hmail.num_failures,
        sender: hmail.todo.mail_from?.address ?? '',
        recipients: recipients(hmail).map((r) => r.address),
    })
    next()
}

exports.scale_retry = function (next, hmail, params) {
    const delay = Math.max(1, Math.round(params.delay / SCALE))
    record('deferred', {
        uuid: hmail.todo.uuid,
        err: String(params.err ?? ''),
        haraka_delay: params.delay,
        delay,
        failures: hmail.num_failures,
        recipients: recipients(hmail),
    })
    next(DENYSOFT, String(delay))
}

exports.note_bounce = function (next, hmail, err) {
    record('bounce', {
        uuid: hmail.todo.uuid,
        err: String(err?.message ?? err ?? ''),
        failures: hmail.num_failures,
        sender: hmail.todo.mail_from?.address ?? '',
        recipients: recipients(hmail),
    })
    next()
}

exports.note_delivery = function (next, hmail, params) {
    const [host, ip, response, delay, port, mode, ok_recips] = params
    record('delivered', {
        uuid: hmail.todo.uuid,
        host,
        ip,
        response,
        delay,
        port,
        mode,
        failures: hmail.num_failures,
        sender: hmail.todo.mail_from?.address ?? '',
        recipients: (ok_recips || []).map((r) => r.address),
    })
    next()
}
