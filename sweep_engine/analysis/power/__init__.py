"""Power analysis before a sweep runs (`sweep-engine plan --power`): how likely its grid is to answer its
questions, in worlds drawn from a prior, through the real analysis; and which single change would help most per
FLOP. One stage per module:

    grid       the spaces -> the exact grid they would run (synthetic.Grid) and its cost
    prior      the default prior over worlds (published numbers and the engine's own measurements)
    fitted     a prior fitted to finished sweeps (--prior)
    simulate   one world -> its ledger on a grid -> the real analysis -> the answers
    questions  the three questions, scored against the world's truth
    estimate   many worlds in parallel -> probabilities with Monte Carlo errors
    suggest    the single changes to try, as space overrides, with their FLOPs
    run        all of the above, in order
    report     the table and the JSON
"""
