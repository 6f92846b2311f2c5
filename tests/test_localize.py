"""Localization (guided scaffold, step 1) on a real git repository: tasks whose answer is known,
the reasons given, the repository map's budget, other languages, and an empty repository."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from sera.agent.localize import (Location, candidate_view, clear_cache, localize, pick_view)

IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]

SOURCES = {
    "shop/__init__.py": "",
    "shop/config.py": '''import json


def parse_config(text):
    data = json.loads(text)
    if "currency" not in data:
        raise KeyError("missing currency in config")
    return data


def load_settings(path):
    with open(path) as handle:
        return parse_config(handle.read())
''',
    "shop/money.py": '''RATES = {"EUR": 1.0, "USD": 1.1}


class Money:
    def __init__(self, amount, currency):
        self.amount = amount
        self.currency = currency

    def convert(self, currency):
        if currency not in RATES:
            raise ValueError(f"unknown currency {currency}")
        return Money(self.amount * RATES[currency] / RATES[self.currency], currency)


def round_cents(value):
    return int(value * 100) / 100
''',
    "shop/cart.py": '''from shop.money import Money, round_cents
from shop.discounts import apply_discount


class Cart:
    def __init__(self):
        self.items = []

    def add_item(self, product, quantity):
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        self.items.append((product, quantity))

    def subtotal(self):
        return round_cents(sum(p.price * q for p, q in self.items))

    def total(self, coupon=None):
        amount = self.subtotal()
        if coupon:
            amount = apply_discount(amount, coupon)
        return Money(amount, "EUR")
''',
    "shop/discounts.py": '''from shop.money import round_cents

PERCENT_COUPONS = {"SAVE10": 10, "HALF": 50}


def apply_discount(amount, coupon):
    percent = PERCENT_COUPONS.get(coupon, 0)
    return round_cents(amount - amount * percent / 100)


def coupon_is_valid(coupon):
    return coupon in PERCENT_COUPONS
''',
    "shop/inventory.py": '''class Inventory:
    def __init__(self):
        self.stock = {}

    def reserve(self, product, quantity):
        available = self.stock.get(product, 0)
        if available < quantity:
            raise RuntimeError("not enough stock for product")
        self.stock[product] = available - quantity

    def restock(self, product, quantity):
        self.stock[product] = self.stock.get(product, 0) + quantity
''',
    "shop/orders.py": '''from shop.cart import Cart
from shop.inventory import Inventory
from shop.mailer import send_receipt


def place_order(cart, inventory, email):
    for product, quantity in cart.items:
        inventory.reserve(product, quantity)
    receipt = cart.total()
    send_receipt(email, receipt)
    return receipt


def cancel_order(order, inventory):
    for product, quantity in order.items:
        inventory.restock(product, quantity)
''',
    "shop/mailer.py": '''import smtplib


def format_receipt(receipt):
    return f"Total: {receipt.amount:.2f} {receipt.currency}"


def send_receipt(email, receipt):
    body = format_receipt(receipt)
    with smtplib.SMTP("localhost") as server:
        server.sendmail("shop@example.com", [email], body)
''',
    "web/checkout.js": '''import { fetchJson } from "./http.js";

export function renderTotal(total) {
  return `<span class="total">${total.toFixed(2)}</span>`;
}

export async function submitCheckout(cart) {
  const response = await fetchJson("/api/checkout", { method: "POST", body: cart });
  if (!response.ok) {
    throw new Error("checkout request failed");
  }
  return renderTotal(response.total);
}
''',
    "web/http.js": '''export async function fetchJson(url, options) {
  const response = await fetch(url, options);
  return response.json();
}
''',
    # A test file is not a place to fix: it must never be suggested.
    "tests/test_cart.py": '''from shop.cart import Cart


def test_total():
    assert Cart().total().amount == 0
''',
}

# (task, file, qualified function name)
TASKS = [
    ('''Traceback (most recent call last):
  File "/home/dev/shop/shop/orders.py", line 8, in place_order
    inventory.reserve(product, quantity)
  File "/home/dev/shop/shop/inventory.py", line 8, in reserve
    raise RuntimeError("not enough stock for product")
RuntimeError: not enough stock for product''', "shop/inventory.py", "Inventory.reserve"),
    ("parse_config crashes with a KeyError when the config file has no currency; it should "
     "default to EUR.", "shop/config.py", "parse_config"),
    ("Money.convert raises for GBP even though we should support it.",
     "shop/money.py", "Money.convert"),
    ("The error 'quantity must be positive' shows up when adding zero items; zero should "
     "just be ignored.", "shop/cart.py", "Cart.add_item"),
    ("Percentage coupons are applied twice to the discount amount, customers get too much off.",
     "shop/discounts.py", "apply_discount"),
    ("Receipts e-mailed to customers show the total with the wrong formatting.",
     "shop/mailer.py", "format_receipt"),
    ("TypeError: total.toFixed is not a function\n    at renderTotal (web/checkout.js:4:38)\n"
     "    at submitCheckout (web/checkout.js:12:10)", "web/checkout.js", "renderTotal"),
    ("Cancelling an order does not put the items back into stock correctly.",
     "shop/orders.py", "cancel_order"),
    ("shop/config.py:12 load_settings leaves the file handle open on Windows",
     "shop/config.py", "load_settings"),
]


GO_SOURCES = {
    "go.mod": "module example.com/kv\n\ngo 1.22\n",
    "main.go": '''package main

import (
	"flag"
	"log"
	"net/http"

	"example.com/kv/config"
	"example.com/kv/server"
	"example.com/kv/store"
)

func main() {
	path := flag.String("config", "kv.json", "configuration file")
	flag.Parse()
	cfg, err := config.Load(*path)
	if err != nil {
		log.Fatal(err)
	}
	handler := server.NewHandler(store.New(), cfg.Secret)
	log.Fatal(http.ListenAndServe(cfg.Address(), handler))
}
''',
    "store/store.go": '''package store

import (
	"errors"
	"sort"
	"sync"
	"time"
)

var ErrNotFound = errors.New("key not found")

type entry struct {
	value   string
	expires time.Time
}

type Store struct {
	mu      sync.RWMutex
	entries map[string]entry
}

func New() *Store {
	return &Store{entries: make(map[string]entry)}
}

func (s *Store) Get(key string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[key]
	if !ok || isExpired(e, time.Now()) {
		return "", ErrNotFound
	}
	return e.value, nil
}

func (s *Store) Set(key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[key] = entry{value: value}
}

func (s *Store) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[key]; !ok {
		return ErrNotFound
	}
	delete(s.entries, key)
	return nil
}

func (s *Store) Keys() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.entries))
	for key := range s.entries {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys[:len(keys)+1]
}
''',
    "store/ttl.go": '''package store

import "time"

func (s *Store) Expire(key string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return ErrNotFound
	}
	e.expires = time.Now().Add(ttl)
	s.entries[key] = e
	return nil
}

func (s *Store) PurgeExpired(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := 0
	for key, e := range s.entries {
		if isExpired(e, now) {
			delete(s.entries, key)
			removed++
		}
	}
	return removed
}

func isExpired(e entry, now time.Time) bool {
	return !e.expires.IsZero() && now.Before(e.expires)
}
''',
    "server/handler.go": '''package server

import (
	"encoding/json"
	"net/http"
	"strings"

	"example.com/kv/metrics"
	"example.com/kv/store"
)

type Handler struct {
	store   *store.Store
	secret  string
	counter *metrics.Counter
}

func NewHandler(s *store.Store, secret string) *Handler {
	return &Handler{store: s, secret: secret, counter: metrics.NewCounter()}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.counter.Increment(r.Method)
	if !h.authorize(r) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	key := parseKey(r.URL.Path)
	switch r.Method {
	case http.MethodGet:
		h.handleGet(w, key)
	case http.MethodPut:
		h.handleSet(w, r, key)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (h *Handler) handleGet(w http.ResponseWriter, key string) {
	value, err := h.store.Get(key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, map[string]string{"key": key, "value": value})
}

func (h *Handler) handleSet(w http.ResponseWriter, r *http.Request, key string) {
	var body struct{ Value string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "invalid JSON body", http.StatusBadRequest)
		return
	}
	h.store.Set(key, body.Value)
	w.WriteHeader(http.StatusNoContent)
}

func parseKey(path string) string {
	return strings.TrimPrefix(path, "/keys")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
''',
    "server/auth.go": '''package server

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

func (h *Handler) authorize(r *http.Request) bool {
	return checkToken(r.Header.Get("Authorization"), h.secret)
}

func checkToken(header, secret string) bool {
	if !strings.HasPrefix(header, "Bearer ") {
		return false
	}
	token := strings.TrimPrefix(header, "Bearer ")
	return subtle.ConstantTimeCompare([]byte(token), []byte(secret)) == 1
}
''',
    "config/config.go": '''package config

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

type Config struct {
	Host    string
	Port    string
	Secret  string
	Timeout int
}

func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	return &cfg, cfg.Validate()
}

func (c *Config) Validate() error {
	if c.Secret == "" {
		return fmt.Errorf("config: secret must be set")
	}
	if _, err := parsePort(c.Port); err != nil {
		return err
	}
	return nil
}

func (c *Config) Address() string {
	return c.Host + ":" + c.Port
}

func parsePort(text string) (int, error) {
	port, err := strconv.Atoi(text)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("invalid port number %q", text)
	}
	return port, nil
}
''',
    "metrics/metrics.go": '''package metrics

import "sync"

type Counter struct {
	mu     sync.Mutex
	counts map[string]int
}

func NewCounter() *Counter {
	return &Counter{counts: make(map[string]int)}
}

func (c *Counter) Increment(name string) {
	c.counts[name]++
}

func (c *Counter) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	copied := make(map[string]int, len(c.counts))
	for name, n := range c.counts {
		copied[name] = n
	}
	return copied
}
''',
    # A test file is not a place to fix.
    "store/store_test.go": '''package store

import "testing"

func TestKeys(t *testing.T) {
	s := New()
	s.Set("a", "1")
	if got := s.Keys(); len(got) != 1 {
		t.Fatalf("Keys() = %v", got)
	}
}
''',
}

# A Go module in another style: packages in folders, methods on receivers (Type.Method), a goroutine
# panic trace (innermost frame first), and a test file that must never be suggested.
GO_TASKS = [
    ("""panic: runtime error: slice bounds out of range [:2] with capacity 1

goroutine 7 [running]:
example.com/kv/store.(*Store).Keys(0xc0000a4000)
	/home/dev/kv/store/store.go:60 +0x1b4
example.com/kv/server.(*Handler).ServeHTTP(0xc0000b2000, {0x7a1f20, 0xc0000c4000}, 0xc0000d0000)
	/home/dev/kv/server/handler.go:31 +0x2a5""", "store/store.go", "Store.Keys"),
    ("Handler.handleSet stores an empty value when the request body has no Value field; it "
     "should answer 400.", "server/handler.go", "Handler.handleSet"),
    ('Starting the server fails with "invalid port number" even for a port like 8080.',
     "config/config.go", "parsePort"),
    ("Entries with a TTL are treated as expired before their time is up and vanish right after "
     "Expire is called.", "store/ttl.go", "isExpired"),
    ("Deleting a key that does not exist returns an error instead of doing nothing.",
     "store/store.go", "Store.Delete"),
    ("Requests with a lowercase bearer scheme in the Authorization header are rejected as "
     "unauthorized.", "server/auth.go", "checkToken"),
    ("The request counters in metrics lose increments when many requests arrive at once.",
     "metrics/metrics.go", "Counter.Increment"),
    ("config/config.go:41 Address builds a broken address for IPv6 hosts",
     "config/config.go", "Config.Address"),
    ("GET /keys/name answers 404 for keys that exist: the key keeps its leading slash.",
     "server/handler.go", "parseKey"),
]


def make_repo(root: Path, sources: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for rel, text in sources.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    subprocess.run(["git", *IDENTITY, "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", *IDENTITY, "-C", str(root), "commit", "-qm", "init"], check=True)
    return root


@pytest.fixture
def shop(tmp_path) -> Path:
    clear_cache()
    return make_repo(tmp_path / "shop", SOURCES)


@pytest.mark.parametrize("sources, tasks, top1_misses", [
    (SOURCES, TASKS, 1), (GO_SOURCES, GO_TASKS, 2)], ids=["python-shop", "go-kv"])
def test_known_tasks_hit_rate(tmp_path, capsys, sources, tasks, top1_misses):
    """Both fixtures at once: the weights are tuned for neither alone. Measured: shop top-1 9/9,
    top-5 9/9; kv top-1 7/9 (checkToken's caller `authorize` reads the Authorization header,
    parseKey is 4th behind functions about keys and names), top-5 9/9."""
    clear_cache()
    root = make_repo(tmp_path / "fixture", sources)
    top1 = top5 = 0
    misses = []
    for task, path, name in tasks:
        found = localize(root, task, limit=5)
        assert all(isinstance(loc, Location) for loc in found)
        assert not any("test" in loc.path for loc in found)
        keys = [(loc.path, loc.name) for loc in found]
        if keys and keys[0] == (path, name):
            top1 += 1
        else:
            misses.append((task[:60], keys[:3]))
        if (path, name) in keys:
            top5 += 1
    with capsys.disabled():
        print(f"\nlocalization hit rate on {len(tasks)} fixture tasks: "
              f"top-1 {top1}/{len(tasks)}, top-5 {top5}/{len(tasks)}")
        for miss in misses:
            print("  top-1 miss:", miss)
    assert top5 == len(tasks)
    assert top1 >= len(tasks) - top1_misses


RETRY_SOURCES = {
    "waits.py": '''import math


class wait_fixed:
    def __init__(self, wait):
        self.wait = wait

    def __call__(self, attempt):
        return self.wait


class wait_exponential:
    def __init__(self, multiplier, maximum):
        self.multiplier = multiplier
        self.maximum = maximum

    def __call__(self, attempt):
        return min(self.multiplier * 2 ** attempt, self.maximum)


class wait_chain:
    def __init__(self, *strategies):
        self.strategies = strategies

    def __call__(self, attempt):
        return self.strategies[min(attempt, len(self.strategies)) - 1](attempt)


def threshold(value, base):
    return math.log(value, base)
''',
}


@pytest.mark.parametrize("task, expected", [
    # The methods' own bodies never say "exponential": their class's name does.
    ("Fix exponential wait underflow for a large attempt",
     ["wait_exponential.__call__", "wait_exponential.__init__"]),
    # The task names the class and the method (`__init__`, common to every class).
    ("wait_chain: reject an empty strategy list in __init__ with ValueError",
     ["wait_chain.__init__"]),
])
def test_methods_are_found_by_their_class(tmp_path, task, expected):
    clear_cache()
    root = make_repo(tmp_path / "retry", RETRY_SOURCES)
    found = localize(root, task, limit=3)
    assert sorted(loc.name for loc in found[:len(expected)]) == sorted(expected), \
        [(loc.name, loc.reasons) for loc in found]


IMPORTS_SOURCES = {
    "report.py": '''"""Reports of the shop."""
import json
import string
import typing

CURRENCY = "EUR"


def render(order):
    return json.dumps(order)


def title(name):
    return string.capwords(name)
''',
    "small.py": "import os\n\n\ndef here():\n    return os.getcwd()\n",
}


def test_the_top_of_a_file_is_a_location_for_imports_and_constants(tmp_path):
    """Fixes that change imports or module constants (a third of tomli's newest small commits)
    had no location to be shown at: the lines before the first definition are one."""
    clear_cache()
    root = make_repo(tmp_path / "imports", IMPORTS_SOURCES)
    found = localize(root, "Reduce import time by removing the `typing` import", limit=3)
    assert (found[0].path, found[0].name, found[0].start_line, found[0].end_line) == (
        "report.py", "(top of file)", 1, 6)
    assert "uses identifiers the task mentions: typing" in found[0].reasons
    everything = localize(root, "anything at all", limit=50)
    assert [(loc.path, loc.name) for loc in everything if loc.name == "(top of file)"] == [
        ("report.py", "(top of file)")]  # small.py's one import line is no region of its own


def test_reasons_are_filled_and_say_why(shop):
    found = localize(shop, TASKS[0][0])
    assert found and all(loc.reasons for loc in found)
    assert any(r.startswith("in a traceback line 8") for r in found[0].reasons)
    named = localize(shop, TASKS[1][0])[0]
    assert "named in the task" in named.reasons
    quoted = localize(shop, TASKS[3][0])[0]
    assert any("error text" in r for r in quoted.reasons)
    assert all(loc.score >= later.score for loc, later in zip(found, found[1:]))
    assert all(loc.start_line <= loc.end_line for loc in found)


def test_graph_reason_and_tests_never_suggested(shop):
    found = localize(shop, "something is off", limit=50)
    assert found, "a vague task still ranks by the graph"
    assert not any(loc.path.startswith("tests/") for loc in found)
    assert any(r.startswith("central in the repository map (PageRank ")
               for loc in found for r in loc.reasons)
    # round_cents is used from three files: the most central definition.
    assert found[0].name == "round_cents"


def test_deterministic(shop):
    first = localize(shop, TASKS[4][0], limit=10)
    clear_cache()
    assert localize(shop, TASKS[4][0], limit=10) == first


def ranking(*scores: float) -> list[Location]:
    return [Location(f"m{i}.py", f"f{i}", 1, 2, score) for i, score in enumerate(scores)]


def test_views_for_candidates():
    close = ranking(5, 4, 3.5, 3, 2, 1.5, 1, 0.5, 0.2, 0.0)
    top, drop, sample = (pick_view(close, c, 5) for c in (0, 1, 2))
    assert (top.variant, top.ranks, top.pinned) == ("top", [1, 2, 3, 4, 5], False)
    assert top.locations == close[:5]
    assert (drop.variant, drop.ranks) == ("drop-top", [2, 3, 4, 5, 6])
    assert drop.locations == close[1:6]
    assert sample.variant == "sample" and len(sample.ranks) == 5
    assert sample.ranks == sorted(set(sample.ranks)) and sample.ranks != top.ranks
    assert [loc.name for loc in sample.locations] == [f"f{r - 1}" for r in sample.ranks]
    samples = [pick_view(close, c, 5).ranks for c in range(2, 12)]
    assert samples == [pick_view(close, c, 5).ranks for c in range(2, 12)]  # deterministic
    assert all(ranks != top.ranks for ranks in samples) and len(set(map(tuple, samples))) > 1
    assert sum(1 in ranks for ranks in samples) > sum(10 in ranks for ranks in samples)
    third = pick_view(close, 3, 5)
    assert third.meta(3) == {"candidate": 3, "variant": "sample", "ranks": third.ranks,
                             "pinned": False}


def test_a_decisive_top_location_is_in_every_view():
    decisive = ranking(12, 5, 4, 3, 2, 1.5, 1, 0.5)
    views = [pick_view(decisive, c, 5) for c in range(6)]
    assert all(v.pinned and v.ranks[0] == 1 and len(v.ranks) == 5 for v in views)
    assert views[1].ranks == [1, 3, 4, 5, 6]
    assert [v.ranks for v in views[2:]] != [[1, 2, 3, 4, 5]] * 4
    assert pick_view(decisive, 4, 1).ranks == [1]


def test_short_rankings_leave_nothing_to_vary():
    few = ranking(3, 2, 1)
    assert all(pick_view(few, c, 5).ranks == [1, 2, 3] and pick_view(few, c, 5).variant == "top"
               for c in range(4))
    assert pick_view([], 2, 5).ranks == [] and pick_view(few, 1, 0).ranks == []


def test_candidate_view_on_a_repository(shop):
    task = TASKS[4][0]  # vague: no decisive location
    assert candidate_view(shop, task, 0).locations == localize(shop, task, limit=5)
    assert candidate_view(shop, task, 1).locations == localize(shop, task, limit=6)[1:]
    pinned = candidate_view(shop, TASKS[1][0], 1)  # parse_config is named in the task
    assert pinned.pinned and pinned.locations[0].name == "parse_config"


def test_javascript_handled(shop):
    found = localize(shop, "fetchJson ignores HTTP error statuses", limit=3)
    assert (found[0].path, found[0].name) == ("web/http.js", "fetchJson")
    assert found[0].start_line == 1


def test_index_follows_edits(shop):
    assert localize(shop, "compute_tax is wrong")[0].name != "compute_tax"
    (shop / "shop" / "tax.py").write_text("def compute_tax(amount):\n    return amount * 0.2\n")
    assert localize(shop, "compute_tax is wrong")[0].name == "compute_tax"


def test_empty_repository(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    assert localize(root, "anything") == []
    (root / "README.md").write_text("# no code here\n")
    assert localize(root, "README") == []


def test_other_languages(tmp_path):
    root = make_repo(tmp_path / "poly", {
        "main.go": 'package main\n\nfunc ParseHeader(line string) string {\n\treturn line\n}\n\n'
                   'func main() {\n\tParseHeader("x")\n}\n',
        "lib.rs": "pub fn checksum(data: &[u8]) -> u32 {\n    data.len() as u32\n}\n",
        "App.java": "class App {\n  int countUsers() {\n    return 0;\n  }\n}\n",
        "util.ts": "export function slugify(text: string): string {\n  return text;\n}\n",
    })
    assert localize(root, "ParseHeader drops the colon")[0].name == "ParseHeader"
    assert localize(root, "the checksum is wrong for empty data")[0].name == "checksum"
    assert localize(root, "App.countUsers returns 0")[0].name == "App.countUsers"
    assert localize(root, "`slugify` keeps spaces")[0].path == "util.ts"


def test_large_repository_localizes_cold_and_warm(tmp_path, capsys):
    sources = {}
    for i in range(2000):
        calls = "\n".join(f"    helper_{(i * 7 + k) % 2000}_0(x)" for k in range(3))
        body = "\n\n".join(f"def helper_{i}_{j}(x):\n    total = x + {j}\n{calls}\n    return total"
                           for j in range(8))
        sources[f"pkg{i % 40}/mod_{i}.py"] = f"import os\n\n\n{body}\n"
    root = make_repo(tmp_path / "big", sources)
    clear_cache()
    start = time.perf_counter()
    found = localize(root, "helper_1234_5 returns the wrong total")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    warm_found = localize(root, "helper_42_1 is slow")
    warm = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n2,000 files / 16,000 functions: cold {cold:.2f}s, warm {warm:.2f}s")
    assert found[0].name == "helper_1234_5"
    assert warm_found[0].name == "helper_42_1"


def test_pagerank_is_networkx_pagerank():
    """The 25-line PageRank equals networkx's reference implementation (weighted, personalized,
    dangling nodes sent to the personalization). It stays ours: networkx's public `pagerank`
    needs scipy, which nothing else in sera does."""
    import random

    import networkx as nx
    from networkx.algorithms.link_analysis.pagerank_alg import _pagerank_python

    from sera.agent.localize import DAMPING, _pagerank
    rng = random.Random(1)
    for _ in range(60):
        nodes = [f"n{i}" for i in range(rng.randint(1, 12))]
        edges: dict[str, dict[str, float]] = {}
        for source in nodes:
            for target in nodes:
                if source != target and rng.random() < 0.25:
                    edges.setdefault(source, {})[target] = rng.choice([0.5, 1.0, 3.0])
        personalization = {n: rng.choice([1.0, 2.0]) for n in nodes if rng.random() < 0.3}
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        graph.add_weighted_edges_from((s, t, w) for s, out in edges.items() for t, w in out.items())
        reference = _pagerank_python(graph, alpha=DAMPING, personalization=personalization or None,
                                     tol=1e-12, max_iter=1000)
        ours = _pagerank(nodes, edges, personalization)
        assert max(abs(ours[n] - reference[n]) for n in nodes) < 1e-6
