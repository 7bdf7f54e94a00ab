package conn

import (
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/instrument"
)

// The classes of Redis commands that decide how a Worker handles a command.
// A command's name is the only thing that says what it does to the
// connection it runs on, so this table is the one place that reads names.
type cmdClass uint8

const (
	// plain commands only touch data: any connection serves them, and they
	// may share a round trip with other callers' commands.
	plain cmdClass = iota
	// blocking commands hold their connection until the server answers
	// (BLPOP, XREAD BLOCK, WAIT, ...): sharing a round trip would hold every
	// other command behind them.
	blocking
	// session commands change the state of the connection they run on
	// (SELECT, AUTH, CLIENT SETNAME, SUBSCRIBE, ...). On a pooled connection
	// that state would reach whichever caller gets the connection next.
	session
	// transaction commands belong to a transaction on one connection (MULTI,
	// EXEC, WATCH, ...).
	transaction
	// admin commands act on the server as a whole; they are never
	// coalesced with other callers' commands.
	admin
)

var cmdClasses = map[string]cmdClass{
	"blpop": blocking, "brpop": blocking, "brpoplpush": blocking, "blmove": blocking,
	"blmpop": blocking, "bzpopmin": blocking, "bzpopmax": blocking, "bzmpop": blocking,
	"xread": blocking, "xreadgroup": blocking, "wait": blocking, "waitaof": blocking,

	"select": session, "auth": session, "hello": session, "reset": session, "quit": session,
	"readonly": session, "readwrite": session, "monitor": session,
	"subscribe": session, "psubscribe": session, "ssubscribe": session,
	"unsubscribe": session, "punsubscribe": session, "sunsubscribe": session,

	"multi": transaction, "exec": transaction, "discard": transaction,
	"watch": transaction, "unwatch": transaction,

	"sync": admin, "psync": admin, "shutdown": admin, "debug": admin, "failover": admin,
	"replicaof": admin, "slaveof": admin, "swapdb": admin, "flushall": admin, "flushdb": admin,
}

// clientSession are the CLIENT subcommands that change the connection's state.
var clientSession = map[string]bool{
	"setname": true, "setinfo": true, "tracking": true, "reply": true,
	"no-evict": true, "no-touch": true, "caching": true,
}

// classOf is the class of cmd.
func classOf(cmd redis.Cmder) cmdClass {
	name := cmd.Name()
	if c, ok := cmdClasses[name]; ok {
		return c
	}
	if name == "client" {
		if args := cmd.Args(); len(args) > 1 {
			if sub, ok := args[1].(string); ok && clientSession[strings.ToLower(sub)] {
				return session
			}
		}
		return admin
	}
	return plain
}

// coalescable: safe to share a round trip with other callers' commands. A
// command this library does not know (a module's, a typo) is not: what it
// does to the connection is unknown.
func coalescable(cmd redis.Cmder) bool {
	return classOf(cmd) == plain && instrument.KnownCommand(cmd.Name())
}

// sessionAdvice says what to use instead of a session command on a pooled
// connection.
func sessionAdvice(cmd redis.Cmder) string {
	switch cmd.Name() {
	case "select":
		return "set REDIS_DB (Config.DB), or use Worker.Conn for one connection"
	case "auth", "hello":
		return "set REDIS_USERNAME and REDIS_PASSWORD, or use Worker.Conn for one connection"
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe":
		return "use Subscribe, PSubscribe or SSubscribe, which keep a connection of their own"
	}
	return "use Worker.Conn, which keeps one connection for its commands"
}
