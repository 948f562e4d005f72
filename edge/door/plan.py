"""The door-pass benchmark's people and script (pure apart from listing the data folder).

Who: identities with several photos (LFW View 1 people with 3+ photos in lfw-deepfunneled, the ORL subjects, the
Hamilton stills' people) are the pool of enrolled people: each is enrolled from one or two photos and walks in with
ANOTHER one. Strangers are people who are never enrolled (LFW people with one or two photos). Fillers (LFW people
with one photo, never strangers) bring the gallery to its size.

What happens: each benchmark day is a script of segments, one clip per segment on one camera at one time of day,
against the benchmark's schedule (one session, 09:00-12:00, grace 5 min, outings of at most 15 min):

    in-morning   08:40  entrance  on-time arrivals                              -> entry
    in-late      09:20  entrance  late arrivals                                 -> entry + late
    out-break    10:00  exit      outings and early leavers go out              -> outing_start
    in-return    10:08  entrance  outings come back                             -> outing_end
    out-home     12:05  exit      people going home after the session           -> outing_start
    closing      13:00  entrance  (strangers only) time passes: open outings close -> exit (+ early_leave)

Early leavers' exits (+ early_leave) are decided when the out-home clip starts (their outing's deadline, 10:15,
has passed); people going home get an exit without early_leave when the closing clip starts. Strangers walk in
every segment. Each walk carries a condition (unmasked, masked, side light, ...), shared out evenly.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from edge.errors import EdgeError
from edge.lfw import LABEL_ALIASES, MISFILED

CONDITIONS: Tuple[str, ...] = ("unmasked", "masked", "side_light", "blur", "low_light", "compressed")
ENTRANCE, EXIT = "door-in", "door-out"
FPS = 10.0
GAP_S = 1.5
"""Empty corridor between two walks: longer than the tracker's max_age_s, so each walk is its own track."""
FIRST_DAY = date(2026, 11, 2)
OUTING_WINDOW_S = 900.0

# segment name -> (camera, local time "HH:MM")
SEGMENTS: Dict[str, Tuple[str, str]] = {
    "in-morning": (ENTRANCE, "08:40"),
    "in-late": (ENTRANCE, "09:20"),
    "out-break": (EXIT, "10:00"),
    "in-return": (ENTRANCE, "10:08"),
    "out-home": (EXIT, "12:05"),
    "closing": (ENTRANCE, "13:00"),
}

# pattern -> its walks: (segment, expected events of that walk, in the order the rules emit them)
PATTERNS: Dict[str, Tuple[Tuple[str, Tuple[str, ...]], ...]] = {
    "on_time": (("in-morning", ("entry",)),),
    "late": (("in-late", ("entry", "late")),),
    "outing": (("in-morning", ("entry",)), ("out-break", ("outing_start",)), ("in-return", ("outing_end",))),
    "early_leave": (("in-morning", ("entry",)), ("out-break", ("outing_start", "exit", "early_leave"))),
    "home": (("in-morning", ("entry",)), ("out-home", ("outing_start", "exit"))),
}
PATTERN_CYCLE = ("on_time", "late", "outing", "on_time", "early_leave", "home", "late", "on_time")


@dataclass(frozen=True)
class Identity:
    """A person of the data folder and their photos (sorted, duplicates by content removed)."""

    person_id: str
    name: str
    photos: Tuple[Path, ...]


@dataclass(frozen=True)
class Enrollee:
    """An enrolled person: enrolled from `enroll_photos`, walks with `walk_photos` (never the same photos)."""

    person_id: str
    name: str
    enroll_photos: Tuple[Path, ...]
    walk_photos: Tuple[Path, ...]


@dataclass(frozen=True)
class Walk:
    """One pass toward a door camera: who (enrolled or a stranger), with which photo, under which condition."""

    walk_id: int
    person_id: str
    photo: Path
    enrolled: bool
    condition: str
    pattern: str
    """The attendance pattern this walk belongs to ("stranger" for strangers)."""
    expected: Tuple[str, ...]
    """Event types this walk must produce for `person_id` (none for a stranger)."""
    duration_s: float
    seed: int


@dataclass(frozen=True)
class Segment:
    """One clip: walks one after another on one camera from `start` (aware, UTC), each followed by GAP_S."""

    day: int
    name: str
    camera: str
    start: datetime
    walks: Tuple[Walk, ...]

    def offsets(self) -> List[float]:
        """Each walk's start in media seconds from the clip's first frame (whole frames)."""
        out, t = [], 0.0
        for walk in self.walks:
            out.append(t)
            t += frames_of(walk.duration_s + GAP_S) / FPS
        return out

    @property
    def duration_s(self) -> float:
        return sum(frames_of(w.duration_s + GAP_S) for w in self.walks) / FPS if self.walks else 1.0


@dataclass(frozen=True)
class Day:
    index: int
    segments: Tuple[Segment, ...]


@dataclass(frozen=True)
class Plan:
    enrollees: Tuple[Enrollee, ...]
    fillers: Tuple[Identity, ...]
    days: Tuple[Day, ...]

    def walks(self) -> Iterator[Tuple[Segment, Walk]]:
        for day in self.days:
            for segment in day.segments:
                for walk in segment.walks:
                    yield segment, walk


def frames_of(seconds: float) -> int:
    return max(1, int(round(seconds * FPS)))


# ------------------------------------------------------------------------------------------- the data folder


def _distinct(paths: Sequence[Path]) -> Tuple[Path, ...]:
    seen, out = set(), []
    for path in sorted(paths):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(path)
    return tuple(out)


HAMILTON_PEOPLE = {
    "biden": ("hamilton/biden.jpg", "hamilton/knn_examples/train/biden/*"),
    "obama": ("hamilton/obama.jpg", "hamilton/obama2.jpg", "hamilton/knn_examples/train/obama/*",
              "hamilton/knn_examples/test/obama1.jpg"),
    "kit_harington": ("hamilton/knn_examples/train/kit_harington/*", "hamilton/knn_examples/test/johnsnow_test1.jpg"),
    "rose_leslie": ("hamilton/knn_examples/train/rose_leslie/*",),
    "alex_lacamoire": ("hamilton/knn_examples/train/alex_lacamoire/*", "hamilton/knn_examples/test/alex_lacamoire1.jpg"),
}  # fmt: skip
"""The Hamilton stills' people with two or more different frontal photos (the profile still and the photos of
several people are left out)."""


def catalogue(data: Path) -> Tuple[List[Identity], List[Identity]]:
    """(people with several photos: the enrolled pool; LFW people with one or two photos: strangers and fillers)."""
    lfw = data / "lfw-view1" / "lfw-deepfunneled"
    orl = data / "orl" / "att_faces"
    if not lfw.is_dir():
        raise EdgeError(f"{lfw}: LFW View 1 images not found (set EDGE_TEST_DATA to the shared data folder)")
    several: List[Identity] = []
    few: List[Identity] = []
    folders: Dict[str, List[Path]] = {}  # LFW's label errors fixed: one person under two spellings is one person
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        kept = [p for p in folder.glob("*.jpg") if f"{folder.name}/{p.name}" not in MISFILED]
        folders.setdefault(LABEL_ALIASES.get(folder.name, folder.name), []).extend(kept)
    for name, found in sorted(folders.items()):
        if not found:  # a folder whose only photo was misfiled (Andrew_Gilligan) is nobody
            continue
        person = Identity(f"lfw.{name}", name.replace("_", " "), tuple(sorted(found)))
        (several if len(person.photos) >= 3 else few).append(person)
    if orl.is_dir():
        for folder in sorted((p for p in orl.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:] or 0)):
            several.append(Identity(f"orl.{folder.name}", f"ORL {folder.name}", tuple(sorted(folder.glob("*.pgm")))))
    for name, patterns in HAMILTON_PEOPLE.items():
        photos = _distinct([p for pattern in patterns for p in data.glob(pattern) if p.is_file()])
        if len(photos) >= 2:
            several.append(Identity(f"ham.{name}", name.replace("_", " "), photos))
    return several, few


# ------------------------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class PlanSize:
    passes: int = 500
    """Walks of enrolled people (at least)."""
    strangers: int = 500
    """Walks of strangers."""
    people: int = 120
    """Enrolled people walking (the pool is shuffled; fewer when the pool is smaller)."""
    gallery_size: int = 1000
    """People in the gallery: the enrolled plus fillers."""
    people_per_day: int = 12
    conditions: Tuple[str, ...] = CONDITIONS
    seed: int = 1
    enroll_photos: int = 2
    """Photos each person is enrolled from (fewer when the person has too few: one is always left to walk with)."""

    def __post_init__(self) -> None:
        for name in ("passes", "people", "people_per_day", "enroll_photos"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strangers < 0:
            raise ValueError(f"strangers must be >= 0, got {self.strangers}")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise ValueError(f"conditions must be among {', '.join(CONDITIONS)}, got {', '.join(unknown) or 'none'}")


def choose_people(
    several: Sequence[Identity], few: Sequence[Identity], size: PlanSize
) -> Tuple[List[Enrollee], List[Identity], List[Identity]]:
    """(candidates, fillers, strangers), chosen with the seed: every person with several photos as a candidate
    for enrollment, in the order to try them (the first `size.people` who can be enrolled walk; the others are
    neither enrolled nor strangers); fillers (people with one photo) for `gallery_size - people` places; strangers,
    everyone else with one or two photos."""
    rng = random.Random(size.seed)
    pool = list(several)
    rng.shuffle(pool)
    candidates = []
    for person in pool:
        photos = list(person.photos)
        rng.shuffle(photos)
        count = max(1, min(size.enroll_photos, len(photos) - 1))  # at least one photo is left to walk with
        candidates.append(Enrollee(person.person_id, person.name, tuple(photos[:count]), tuple(photos[count:])))
    singles = [p for p in few if len(p.photos) == 1]
    rng.shuffle(singles)
    fillers = singles[: max(0, size.gallery_size - size.people)]
    taken = {p.person_id for p in fillers}
    strangers = [p for p in few if p.person_id not in taken]
    rng.shuffle(strangers)
    return candidates, fillers, strangers


def make_plan(enrollees: Sequence[Enrollee], fillers: Sequence[Identity], strangers: Sequence[Identity],
              size: PlanSize) -> Plan:  # fmt: skip
    """The days: enrolled people in turn (each at most once a day) with a pattern each, strangers spread over the
    segments; then conditions dealt out evenly over the enrolled walks and over the strangers' walks."""
    if not enrollees:
        raise EdgeError("no enrolled people to walk: the pool of people with several photos is empty")
    if size.strangers and not strangers:
        raise EdgeError("no strangers left: every person with few photos is a filler (lower --gallery-size)")
    rng = random.Random(size.seed + 1)
    queue: List[Enrollee] = []
    pattern_turn = 0
    photo_turn: Dict[str, int] = {}
    raw_days: List[Dict[str, List[Tuple[str, str, Path, bool, Tuple[str, ...]]]]] = []
    enrolled_walks = 0
    while enrolled_walks < size.passes:
        day: Dict[str, List[Tuple[str, str, Path, bool, Tuple[str, ...]]]] = {name: [] for name in SEGMENTS}
        today: List[Enrollee] = []
        while len(today) < min(size.people_per_day, len(enrollees)) and enrolled_walks < size.passes:
            # everyone in turn, in a new order each round; nobody twice a day (one entry a day per person)
            person = next((p for p in queue if p not in today), None)
            if person is None:
                shuffled = list(enrollees)
                rng.shuffle(shuffled)
                queue.extend(shuffled)
                continue
            queue.remove(person)
            today.append(person)
            pattern = PATTERN_CYCLE[pattern_turn % len(PATTERN_CYCLE)]
            pattern_turn += 1
            for segment, expected in PATTERNS[pattern]:
                k = photo_turn.get(person.person_id, 0)
                photo_turn[person.person_id] = k + 1
                photo = person.walk_photos[k % len(person.walk_photos)]
                day[segment].append((person.person_id, pattern, photo, True, expected))
                enrolled_walks += 1
        raw_days.append(day)
    stranger_segments = [name for name in SEGMENTS]
    for k in range(size.strangers):
        stranger = strangers[k % len(strangers)]
        photo = stranger.photos[rng.randrange(len(stranger.photos))]
        day = raw_days[k % len(raw_days)]
        day[stranger_segments[(k // len(raw_days)) % len(stranger_segments)]].append(
            (stranger.person_id, "stranger", photo, False, ())
        )
    for day in raw_days:
        for items in day.values():
            rng.shuffle(items)
    conditions = _deal_conditions(raw_days, size.conditions, rng)
    days = []
    walk_id = 0
    for index, day in enumerate(raw_days):
        segments = []
        for name, (camera, hhmm) in SEGMENTS.items():
            items = day[name]
            if not items and name != "closing":
                continue
            walks = []
            for person_id, pattern, photo, enrolled, expected in items:
                walks.append(Walk(walk_id, person_id, photo, enrolled, conditions[walk_id], pattern, expected,
                                  duration_s=round(rng.uniform(3.0, 4.0), 1), seed=rng.randrange(1 << 30)))  # fmt: skip
                walk_id += 1
            hour, minute = (int(x) for x in hhmm.split(":"))
            moment = datetime.combine(FIRST_DAY + timedelta(days=index), datetime.min.time(), tzinfo=timezone.utc)
            segments.append(Segment(index, name, camera, moment.replace(hour=hour, minute=minute), tuple(walks)))
        days.append(Day(index, tuple(segments)))
    return Plan(tuple(enrollees), tuple(fillers), tuple(days))


def _deal_conditions(raw_days: Sequence[Dict[str, List[Tuple[str, str, Path, bool, Tuple[str, ...]]]]],
                     conditions: Sequence[str], rng: random.Random) -> Dict[int, str]:  # fmt: skip
    """Walk id -> condition, in the order make_plan numbers the walks: an equal share of each condition among the
    enrolled walks and among the strangers' walks (dealt round-robin over a shuffled order)."""
    ordered: List[bool] = []
    for day in raw_days:
        for name in SEGMENTS:
            ordered.extend(item[3] for item in day[name])
    out: Dict[int, str] = {}
    for enrolled in (True, False):
        ids = [i for i, e in enumerate(ordered) if e == enrolled]
        rng.shuffle(ids)
        for k, walk_id in enumerate(ids):
            out[walk_id] = conditions[k % len(conditions)]
    return out


def walk_window(segment: Segment, walk_index: int) -> Tuple[float, float]:
    """(first, last) POSIX time of a walk's frames on its clip's timeline, the gap after it included."""
    offset = segment.offsets()[walk_index]
    walk = segment.walks[walk_index]
    start = segment.start.timestamp() + offset
    return start, start + frames_of(walk.duration_s + GAP_S) / FPS


def find_person(plan: Plan, person_id: str) -> Optional[Enrollee]:
    return next((e for e in plan.enrollees if e.person_id == person_id), None)
