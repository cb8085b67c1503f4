"""Loads the social data set of bench/social and bench/instructions straight into the database
(Python's sqlite3 for SQLite, CSV files for psql COPY otherwise): N accounts (bk_auth, bk_account,
bk_counter, bk_location), uniform over ~110 x 105 km around LAT/LON, 5 likes each with their
reverse rows, and the bench account's 100 likes. Shared so both benches measure the same rows;
not a bench script itself. Env: STORE (sqlite|pgsql), BENCH_ID, N, LAT, LON, DB, OUT.
"""
import csv, os, random, sqlite3, time

B32 = "0123456789bcdefghjkmnpqrstuvwxyz"

def geohash(lat, lon, n=12):
    """The standard geohash encoding (the bkjs server stores 12 characters)."""
    lat_r, lon_r = [-90.0, 90.0], [-180.0, 180.0]
    out, ch, bit, even = [], 0, 0, True
    while len(out) < n:
        r, v = (lon_r, lon) if even else (lat_r, lat)
        mid = (r[0] + r[1]) / 2
        if v >= mid:
            ch, r[0] = ch * 2 + 1, mid
        else:
            ch, r[1] = ch * 2, mid
        even, bit = not even, bit + 1
        if bit == 5:
            out.append(B32[ch])
            ch, bit = 0, 0
    return "".join(out)

rng = random.Random(42)
n, bench = int(os.environ["N"]), os.environ["BENCH_ID"]
clat, clon = float(os.environ["LAT"]), float(os.environ["LON"])
now = int(time.time() * 1000)
ids = ["%032x" % rng.getrandbits(128) for _ in range(n)]
points = []
for i in range(n):
    lat, lon = clat + rng.uniform(-0.5, 0.5), clon + rng.uniform(-0.6, 0.6)
    points.append((lat, lon, geohash(lat, lon)))
# Who likes whom: 5 others each (drawn once, so both directions hold the same pairs).
likes = [rng.sample(range(n), 5) for _ in range(n)]
counts = {"conn": 0}

# Each table's rows are generated as they are written (a million accounts fit in memory only
# as their points and likes).
def auth():
    for i, id in enumerate(ids):
        yield ("u%d" % i, id, "User %d" % i, "secret%d" % i, now)

def account():
    for i, (id, (lat, lon, gh)) in enumerate(zip(ids, points)):
        yield (id, "User %d" % i, "u%d" % i, "User %d" % i, gh, lat, lon, now, now, now)

def counter():
    for id in ids:
        yield (id, 0, 0, 0, 0, 0, 0, 0)

def location():
    for i, (id, (lat, lon, gh)) in enumerate(zip(ids, points)):
        yield (gh, id, lat, lon, "User %d" % i, now)

def conn():
    for i, id in enumerate(ids):
        for j in likes[i]:
            if j != i:
                counts["conn"] += 1
                yield (id, "like:" + ids[j], ids[j], "User %d" % j, now)
    for j in range(100):
        counts["conn"] += 1
        yield (bench, "like:" + ids[j], ids[j], "User %d" % j, now)

def ref():
    for i, id in enumerate(ids):
        for j in likes[i]:
            if j != i:
                yield (ids[j], "like:" + id, id, "User %d" % i, now)
    for j in range(100):
        yield (ids[j], "like:" + bench, bench, "Bench", now)

tables = {
    "bk_auth": ("login,id,alias,secret,mtime", auth),
    "bk_account": ("id,alias,login,name,geohash,latitude,longitude,ltime,ctime,mtime", account),
    "bk_counter": ("id,ping,like0,like1,follow0,follow1,msg0,msg1", counter),
    "bk_location": ("geohash,id,latitude,longitude,alias,mtime", location),
    "bk_connection": ("id,type,connection,alias,mtime", conn),
    "bk_reference": ("id,type,connection,alias,mtime", ref),
}
if os.environ["STORE"] == "sqlite":
    db = sqlite3.connect(os.environ["DB"], timeout=30)
    # One transaction; the server's connections see it whole once it commits.
    db.execute("PRAGMA cache_size = -262144")
    with db:
        for t, (cols, rows) in tables.items():
            marks = ",".join("?" * len(cols.split(",")))
            db.executemany("INSERT OR REPLACE INTO %s (%s) VALUES (%s)" % (t, cols, marks), rows())
    db.close()
else:
    os.makedirs(os.environ["OUT"], exist_ok=True)
    for t, (cols, rows) in tables.items():
        with open(os.path.join(os.environ["OUT"], t + ".csv"), "w", newline="") as f:
            csv.writer(f).writerows(rows())
        with open(os.path.join(os.environ["OUT"], t + ".cols"), "w") as f:
            f.write(cols)
print("loaded %d accounts, %d connections" % (n, counts["conn"]))
