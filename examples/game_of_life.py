"""Conway's Game of Life in barrier rounds: one batch per generation.

Each generation is split into bands of rows, one job per band. A job reads
only the current board and writes only its own rows of the next one, so the
jobs need no lock; the batch's barrier makes sure every band is written
before the boards are swapped and the next generation starts. (Calling
``dispatcher.wait()`` after the loop of dispatches would be the same barrier
for a dispatcher that runs nothing else.)

Run it with ``python examples/game_of_life.py``.
"""

from functools import partial

from jobdispatch import Dispatcher

SIZE = 16  # the board is SIZE x SIZE cells on a torus (edges wrap around)
BAND = 4  # rows per job
GENERATIONS = 8

Board = list[list[int]]


def step_rows(current: Board, following: Board, first: int, last: int) -> None:
    """Write rows first..last-1 of the next generation into ``following``."""
    for y in range(first, last):
        for x in range(SIZE):
            neighbours = sum(
                current[(y + dy) % SIZE][(x + dx) % SIZE] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
            )
            alive = current[y][x]
            following[y][x] = 1 if neighbours == 3 or (alive and neighbours == 2) else 0


def serial_step(board: Board) -> Board:
    """The same rule on one thread, to check the parallel result."""
    following = [[0] * SIZE for _ in range(SIZE)]
    step_rows(board, following, 0, SIZE)
    return following


def show(board: Board) -> str:
    return "\n".join("".join("#" if cell else "." for cell in row) for row in board)


def population(board: Board) -> int:
    return sum(map(sum, board))


def alive(board: Board) -> set[tuple[int, int]]:
    return {(x, y) for y, row in enumerate(board) for x, cell in enumerate(row) if cell}


GLIDER = {(1, 0), (2, 1), (0, 2), (1, 2), (2, 2)}  # heads down and right, one cell every 4 generations
BLINKER = {(9, 12), (10, 12), (11, 12)}  # flips between a row and a column: period 2
board: Board = [[0] * SIZE for _ in range(SIZE)]
for x, y in GLIDER | BLINKER:
    board[y][x] = 1
expected = board

print(f"generation 0, population {population(board)}:\n{show(board)}\n")
with Dispatcher(SIZE // BAND, name="life") as dispatcher:
    for generation in range(1, GENERATIONS + 1):
        following: Board = [[0] * SIZE for _ in range(SIZE)]
        with dispatcher.batch() as batch:
            for first in range(0, SIZE, BAND):
                batch.dispatch(partial(step_rows, board, following, first, first + BAND))
        # The barrier: every band of `following` is written now.
        board = following
        expected = serial_step(expected)
        print(f"generation {generation}: {batch.done} bands, population {population(board)}")

print(f"\ngeneration {GENERATIONS}:\n{show(board)}")
print("same as the one-thread computation:", board == expected)
moved = {(x + GENERATIONS // 4, y + GENERATIONS // 4) for x, y in GLIDER}
print("glider moved 2 cells diagonally, blinker back in place:", alive(board) == moved | BLINKER)
