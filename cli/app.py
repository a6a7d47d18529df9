from kinetic.cli import main
